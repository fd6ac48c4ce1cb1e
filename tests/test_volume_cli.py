"""`sixfold volume` and `compute.client.VolumeClient`.

The first half runs the CLI in this process against a small in-memory fake of
`compute.v1.VolumeService` (formatting, argument parsing, error reporting); the
second half runs `sixfold volume` as a subprocess against a real cluster with
its compute node (the `cluster` fixture).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from sixfold.compute.client import VolumeClient, VolumeError
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
from sixfold.tools.cli import main
from sixfold.tools.cluster import COMPUTE, CONTROL_PLANE, DEFAULT_VOLUME, PROJECT_ROOT, Cluster
from sixfold.tools.volume_cli import hex_dump, parse_size, printable_text, readable_view

CLI_TIMEOUT_S = 60.0
FAKE_PAGE_SIZE = 4096
FAKE_SEGMENT_BYTES = 10 << 30
FAKE_PAGES_MAX = 1 << 20


# --- a fake compute node -------------------------------------------------------------------


class FakeVolumeService(vgrpc.VolumeServiceServicer):
    """Volumes in a dict; every patch gets the next LSN and is durable at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.volumes: dict[str, vpb.VolumeStatus] = {}
        self.pages: dict[tuple[str, int], tuple[bytearray, int]] = {}
        self.timeouts: list[float | None] = []
        self.write_delay_s = 0.0  # a slow writer: the write is stored, the answer comes late
        self.read_delay_s = 0.0

    def _volume(self, volume_id: str, context: grpc.ServicerContext) -> vpb.VolumeStatus:
        self.timeouts.append(context.time_remaining())
        if volume_id not in self.volumes:
            context.abort(grpc.StatusCode.NOT_FOUND, f"volume {volume_id!r} does not exist; create it first")
        return self.volumes[volume_id]

    def CreateVolume(self, request, context):
        with self.lock:
            if request.volume_id in self.volumes:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"volume {request.volume_id!r} already exists")
            segments = [
                vpb.SegmentStatus(
                    segment_id=f"{request.volume_id}/pg-00000",
                    node_id=f"{az}{i}",
                    az=az,
                    address="127.0.0.1:1",
                    connected=True,
                )
                for az in "abc"
                for i in (1, 2)
            ]
            status = vpb.VolumeStatus(
                volume_id=request.volume_id,
                page_size=request.page_size or FAKE_PAGE_SIZE,
                segment_size_bytes=request.segment_size_bytes or FAKE_SEGMENT_BYTES,
                volume_epoch=1,
                geometry_epoch=1,
                protection_groups=[
                    vpb.PgStatus(pg_index=0, first_page=0, page_count=1000, membership_epoch=1, segments=segments)
                ],
            )
            self.volumes[request.volume_id] = status
            return vpb.CreateVolumeResponse(status=status)

    def WritePages(self, request, context):
        with self.lock:
            volume = self._volume(request.volume_id, context)
            if not request.patches:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an MTR needs at least one patch")
            for patch in request.patches:
                if patch.page_no >= FAKE_PAGES_MAX:
                    context.abort(grpc.StatusCode.OUT_OF_RANGE, f"page {patch.page_no} is beyond the volume")
                if patch.offset + len(patch.data) > volume.page_size:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the patch to page {patch.page_no} is too long")
            for patch in request.patches:
                volume.lsn_allocated += 1
                key = (request.volume_id, patch.page_no)
                page = self.pages.get(key, (bytearray(volume.page_size), 0))[0]
                page[patch.offset : patch.offset + len(patch.data)] = patch.data
                self.pages[key] = (page, volume.lsn_allocated)
            volume.vdl = volume.vcl = volume.lsn_allocated
            volume.commits += 1
        time.sleep(self.write_delay_s)
        return vpb.WritePagesResponse(lsn=volume.vdl)

    def ReadPages(self, request, context):
        with self.lock:
            volume = self._volume(request.volume_id, context)
            images = []
            for page_no in request.page_nos:
                page, lsn = self.pages.get((request.volume_id, page_no), (bytearray(volume.page_size), 0))
                images.append(vpb.PageImage(page_no=page_no, data=bytes(page), page_lsn=lsn))
        time.sleep(self.read_delay_s)
        return vpb.ReadPagesResponse(read_point=volume.vdl, pages=images)

    def GetVolumeStatus(self, request, context):
        with self.lock:
            return vpb.GetVolumeStatusResponse(status=self._volume(request.volume_id, context))

    def ListVolumes(self, request, context):
        with self.lock:
            return vpb.ListVolumesResponse(volumes=[self.volumes[name] for name in sorted(self.volumes)])


@pytest.fixture
def fake() -> Iterator[tuple[str, FakeVolumeService]]:
    """(address, servicer) of a fake compute node in this process, with volume vol0."""
    servicer = FakeVolumeService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    vgrpc.add_VolumeServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.CreateVolume(vpb.CreateVolumeRequest(volume_id=DEFAULT_VOLUME), None)
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


def cli(capsys: pytest.CaptureFixture[str], address: str, *args: str) -> tuple[int, str, str]:
    """`sixfold volume ARGS --address ADDRESS` in this process: (exit code, stdout, stderr)."""
    code = main(["volume", *args, "--address", address])
    out, err = capsys.readouterr()
    return code, out, err


def lsn_of(out: str) -> int:
    match = re.search(r"\blsn (\d+)\b", out)
    assert match, out
    return int(match.group(1))


# --- the client, against the fake -------------------------------------------------------------------


@pytest.mark.unit
def test_client_writes_reads_and_reports_errors(fake: tuple[str, FakeVolumeService]) -> None:
    address, servicer = fake
    with VolumeClient(address, timeout_s=5.0) as client:
        status = client.create_volume("v1", page_size=512, segment_size_bytes=1 << 26)
        assert (status.volume_id, status.page_size, status.segment_size_bytes) == ("v1", 512, 1 << 26)
        lsn = client.write("v1", [(3, 0, b"abc"), (4, 10, b"xyz")])
        assert lsn == 2
        assert client.write_page("v1", 3, b"Z", offset=1) == 3
        read_point, pages = client.read("v1", [3, 4, 5])
        assert read_point == 3 and set(pages) == {3, 4, 5}
        assert pages[3][:4] == b"aZc\0" and pages[4][10:13] == b"xyz" and pages[5] == bytes(512)
        assert client.read_page("v1", 4)[10:13] == b"xyz"
        assert client.status("v1").vdl == 3
        assert [v.volume_id for v in client.list_volumes()] == ["v1", DEFAULT_VOLUME]  # sorted by name

        with pytest.raises(VolumeError) as raised:
            client.read_page("nosuch", 0)
        error = raised.value
        assert error.code == grpc.StatusCode.NOT_FOUND and error.code_name == "NOT_FOUND"
        assert "nosuch" in error.details and str(error).startswith("NOT_FOUND: ")
        assert isinstance(error.rpc_error, grpc.RpcError) and error.__cause__ is error.rpc_error
        with pytest.raises(VolumeError, match="ALREADY_EXISTS"):
            client.create_volume("v1")
        with pytest.raises(VolumeError) as raised:
            client.write("v1", [])
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.timeouts and all(t is not None and t < 5.5 for t in servicer.timeouts), servicer.timeouts
    assert VolumeError("UNAVAILABLE", "x").code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.unit
def test_client_to_nothing_is_unavailable() -> None:
    from tests.conftest import free_port

    with VolumeClient(f"127.0.0.1:{free_port()}", timeout_s=2.0) as client, pytest.raises(VolumeError) as raised:
        client.list_volumes()
    assert raised.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# --- the CLI, against the fake ------------------------------------------------------------------------


@pytest.mark.unit
def test_cli_write_text_then_read_shows_it_with_a_note_on_zeros(
    fake: tuple[str, FakeVolumeService], capsys: pytest.CaptureFixture[str]
) -> None:
    address, _ = fake
    code, out, err = cli(capsys, address, "write", DEFAULT_VOLUME, "3", "--text", "hello")
    assert code == 0 and err == "" and lsn_of(out) == 1
    code, out, _ = cli(capsys, address, "read", DEFAULT_VOLUME, "3")
    assert code == 0
    header, text, note = out.splitlines()
    assert "vol0 page 3" in header and "page LSN 1" in header and "VDL 1" in header
    assert text == "hello" and note == f"({FAKE_PAGE_SIZE - 5} trailing zero bytes not shown)"

    code, out, _ = cli(capsys, address, "read", DEFAULT_VOLUME, "3", "--offset", "1", "--length", "3", "--hex")
    assert (code, out) == (0, "656c6c\n")
    code, out, _ = cli(capsys, address, "read", DEFAULT_VOLUME, "7")
    assert code == 0 and "never written" in out and f"all {FAKE_PAGE_SIZE} bytes are zero" in out


@pytest.mark.unit
def test_cli_binary_data_is_shown_as_a_hex_dump(
    fake: tuple[str, FakeVolumeService], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    address, _ = fake
    assert cli(capsys, address, "write", DEFAULT_VOLUME, "5", "--offset", "16", "--hex", "00 ff 41:42")[0] == 0
    code, out, _ = cli(capsys, address, "read", DEFAULT_VOLUME, "5")
    assert code == 0
    assert "00000010  00 ff 41 42" in out and "|..AB|" in out
    assert f"({FAKE_PAGE_SIZE - 20} trailing zero bytes not shown)" in out

    source = tmp_path / "blob"
    source.write_bytes(bytes(range(256)))
    code, out, _ = cli(capsys, address, "write", DEFAULT_VOLUME, "6", "--file", str(source))
    assert code == 0 and "256 bytes" in out
    code, out, _ = cli(capsys, address, "read", DEFAULT_VOLUME, "6", "--length", "256", "--hex")
    assert bytes.fromhex(out.strip()) == bytes(range(256))


@pytest.mark.unit
def test_cli_raw_read_writes_the_bytes(
    fake: tuple[str, FakeVolumeService], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    address, _ = fake
    assert main(["volume", "write", DEFAULT_VOLUME, "2", "--text", "héllo", "--address", address]) == 0
    capsysbinary.readouterr()
    assert main(["volume", "read", DEFAULT_VOLUME, "2", "--raw", "--address", address]) == 0
    out = capsysbinary.readouterr().out
    assert len(out) == FAKE_PAGE_SIZE and out.startswith("héllo".encode())


@pytest.mark.unit
def test_cli_create_status_and_list(fake: tuple[str, FakeVolumeService], capsys: pytest.CaptureFixture[str]) -> None:
    address, _ = fake
    code, out, _ = cli(capsys, address, "create", "second", "--page-size", "8KiB", "--segment-size", "64MiB")
    assert code == 0 and "created volume second" in out and "8192 B" in out and "64 MiB" in out
    cli(capsys, address, "write", "second", "1", "--text", "x")

    code, out, _ = cli(capsys, address, "status", "second")
    assert code == 0
    assert "volume second: page size 8192 B, segment size 64 MiB" in out
    assert "VDL 1" in out and "VCL 1" in out and "allocated LSN 1" in out and "fenced: no" in out
    assert "PG 0: pages 0-999" in out
    for node in ("a1", "a2", "b1", "b2", "c1", "c2"):
        assert re.search(rf"^\s+{node}\s+{node[0]}\s", out, re.MULTILINE), out

    code, out, _ = cli(capsys, address, "status")
    assert code == 0 and re.search(r"^second\s+1\s+1\s", out, re.MULTILINE) and "vol0" in out
    code, out, _ = cli(capsys, address, "list")
    assert code == 0 and re.search(r"^second\s+8192 B\s+64 MiB", out, re.MULTILINE)
    code, out, _ = cli(capsys, address, "list", "--json")
    assert code == 0 and out.strip() == '["second", "vol0"]'
    code, out, _ = cli(capsys, address, "status", "second", "--json")
    assert code == 0 and '"vdl": 1' in out and '"volume_id": "second"' in out


@pytest.mark.unit
def test_cli_errors_print_one_line_and_exit_1(
    fake: tuple[str, FakeVolumeService], capsys: pytest.CaptureFixture[str]
) -> None:
    address, _ = fake
    code, out, err = cli(capsys, address, "read", "nosuch", "0")
    assert (code, out) == (1, "")
    assert err == "error: NOT_FOUND: volume 'nosuch' does not exist; create it first\n"
    code, _, err = cli(capsys, address, "create", DEFAULT_VOLUME)
    assert code == 1 and err.startswith("error: ALREADY_EXISTS: ")
    code, _, err = cli(capsys, address, "write", DEFAULT_VOLUME, str(FAKE_PAGES_MAX), "--text", "x")
    assert code == 1 and err.startswith("error: OUT_OF_RANGE: ")
    code, _, err = cli(capsys, address, "write", DEFAULT_VOLUME, "0", "--file", "/nonexistent/file")
    assert code == 1 and err.startswith("error: cannot read /nonexistent/file")
    with pytest.raises(SystemExit) as raised:  # argparse: bad usage exits 2
        main(["volume", "write", DEFAULT_VOLUME, "0", "--hex", "xyz", "--address", address])
    assert raised.value.code == 2 and "not hex bytes" in capsys.readouterr().err


@pytest.mark.unit
def test_numbers_beyond_the_wire_are_refused_with_a_sentence(
    fake: tuple[str, FakeVolumeService], capsys: pytest.CaptureFixture[str]
) -> None:
    address, _ = fake
    cases = [
        (["read", DEFAULT_VOLUME, str(1 << 64)], f"must be at most {(1 << 64) - 1}"),
        (["write", DEFAULT_VOLUME, "1", "--offset", str(1 << 32), "--text", "x"], f"must be at most {(1 << 32) - 1}"),
        (["read", DEFAULT_VOLUME, "1", "--timeout", "0"], "must be a number of seconds above 0"),
        (["read", DEFAULT_VOLUME, "1", "--timeout", "-1"], "must be a number of seconds above 0"),
        (["read", DEFAULT_VOLUME, "1", "--timeout", "nan"], "must be a number of seconds above 0"),
    ]
    for args, sentence in cases:
        with pytest.raises(SystemExit) as raised:
            main(["volume", *args, "--address", address])
        err = capsys.readouterr().err
        assert raised.value.code == 2 and sentence in err and "Traceback" not in err, (args, err)
    with VolumeClient(address) as client:
        with pytest.raises(VolumeError, match="a page number must be from 0 to 18446744073709551615") as error:
            client.write_page(DEFAULT_VOLUME, 1 << 64, b"x")
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(VolumeError, match="an offset must be from 0 to 4294967295"):
            client.write_page(DEFAULT_VOLUME, 1, b"x", offset=1 << 32)
        with pytest.raises(ValueError, match="above 0"):
            client.read(DEFAULT_VOLUME, [1], timeout_s=0)
    with pytest.raises(ValueError, match="above 0"):
        VolumeClient(address, timeout_s=-1)


@pytest.mark.unit
def test_a_write_whose_answer_is_late_says_it_may_have_committed(
    fake: tuple[str, FakeVolumeService], capsys: pytest.CaptureFixture[str]
) -> None:
    address, servicer = fake
    servicer.write_delay_s = 1.0
    code, out, err = cli(capsys, address, "write", DEFAULT_VOLUME, "5", "--text", "late", "--timeout", "0.2")
    assert (code, out) == (1, "")
    assert err.startswith("error: DEADLINE_EXCEEDED: "), err
    assert "may have been stored" in err and f"`sixfold volume read {DEFAULT_VOLUME} 5`" in err, err
    servicer.write_delay_s = 0.0
    code, out, _ = cli(capsys, address, "read", DEFAULT_VOLUME, "5")  # it was stored all along
    assert code == 0 and out.splitlines()[1] == "late", out
    servicer.read_delay_s = 1.0
    code, _, err = cli(capsys, address, "read", DEFAULT_VOLUME, "5", "--timeout", "0.2")
    assert code == 1 and "did not answer within 0.2 s (--timeout)" in err, err


@pytest.mark.unit
def test_a_closed_pipe_ends_quietly(fake: tuple[str, FakeVolumeService]) -> None:
    address, _ = fake
    process = subprocess.Popen(
        [sys.executable, "-m", "sixfold.tools.cli", "volume", "status", "--address", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before anything is written (as `| head -0`)
    err = process.stderr.read().decode()
    assert process.wait(timeout=CLI_TIMEOUT_S) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.unit
def test_global_options_may_come_before_the_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    assert main(["--state-dir", str(empty), "volume", "list"]) == 1
    assert f"no cluster in {empty}" in capsys.readouterr().err
    assert main(["--state-dir", str(empty), "status"]) == 1
    assert "no cluster" in capsys.readouterr().err
    assert not empty.exists() or not any(empty.iterdir()), "status on an empty dir left something behind"
    with pytest.raises(SystemExit) as raised:
        main(["--state-dir", str(empty), "sim", "--seeds", "1"])
    assert raised.value.code == 2 and "`sixfold sim` does not take --state-dir" in capsys.readouterr().err


@pytest.mark.unit
def test_cli_without_a_cluster_says_how_to_start_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["volume", "list", "--state-dir", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no cluster in ") and "sixfold up" in err


@pytest.mark.unit
def test_readable_view_and_sizes() -> None:
    assert parse_size("4096") == 4096 and parse_size("64MiB") == 64 << 20 and parse_size("10GiB") == 10 << 30
    assert parse_size("8k") == 8192 and parse_size("1 TiB") == 1 << 40
    for bad in ("64MB", "ten", "-1", "1.5GiB"):
        with pytest.raises(Exception, match="not a size"):
            parse_size(bad)
    assert printable_text(b"line 1\n\tline 2") == "line 1\n\tline 2"
    assert printable_text(b"a\x00b") is None and printable_text(b"\xff") is None
    assert readable_view(b"hi\0\0", 0) == "hi\n(2 trailing zero bytes not shown)"
    assert readable_view(b"\0\0", 0) == "(all 2 bytes are zero)"
    assert readable_view(b"\x01\x02", 32) == hex_dump(b"\x01\x02", 32)
    assert hex_dump(bytes(range(20)), 0).splitlines()[1].startswith("00000010  10 11 12 13")
    assert [line[:8] for line in hex_dump(bytes(64) + b"x", 0).splitlines()] == ["00000000", "*", "00000040"]


# --- through a real cluster --------------------------------------------------------------------------


def sixfold_volume(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`sixfold volume ARGS --state-dir STATE_DIR` as a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", "volume", *args, "--state-dir", str(cluster.state_dir)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def volume_ok(cluster: Cluster, *args: str) -> str:
    result = sixfold_volume(cluster, *args)
    assert result.returncode == 0, (
        f"sixfold volume {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.mark.integration
def test_volume_cli_through_a_real_cluster(cluster: Cluster) -> None:
    assert cluster.default_volume() == DEFAULT_VOLUME

    lsn = lsn_of(volume_ok(cluster, "write", DEFAULT_VOLUME, "3", "--text", "hello"))
    out = volume_ok(cluster, "read", DEFAULT_VOLUME, "3")
    assert out.splitlines()[1] == "hello" and "trailing zero bytes not shown" in out, out
    print(out)

    status = volume_ok(cluster, "status", DEFAULT_VOLUME)
    print(status)
    shown = re.search(r"\bVDL (\d+)", status)
    assert shown, status
    vdl = int(shown.group(1))
    assert vdl >= lsn
    assert "fenced: no" in status and "PG 0:" in status
    assert sorted(re.findall(r"^\s+[abc][12]\s+([abc])\s", status, re.MULTILINE)) == ["a", "a", "b", "b", "c", "c"]

    # --from-storage skips the buffer cache: the storage-read counter moves, the cache-hit counter does not
    def reads() -> tuple[int, int]:
        found = re.search(
            r"reads: (\d+) pages from the buffer cache, (\d+) from storage",
            volume_ok(cluster, "status", DEFAULT_VOLUME),
        )
        assert found, "status shows no read counters"
        return int(found.group(1)), int(found.group(2))

    hits, from_storage = reads()
    out = volume_ok(cluster, "read", DEFAULT_VOLUME, "3", "--from-storage")
    assert out.splitlines()[1] == "hello" and "from storage" in out, out
    assert reads() == (hits, from_storage + 1)
    volume_ok(cluster, "read", DEFAULT_VOLUME, "3")
    assert reads() == (hits + 1, from_storage + 1)

    # a second volume: create, write (binary, at an offset), read back
    out = volume_ok(cluster, "create", "second", "--segment-size", "64MiB")
    assert "created volume second" in out and "64 MiB" in out
    lsn2 = lsn_of(volume_ok(cluster, "write", "second", "7", "--offset", "100", "--hex", "deadbeef"))
    assert lsn2 > 0
    assert volume_ok(cluster, "read", "second", "7", "--offset", "100", "--length", "4", "--hex").strip() == "deadbeef"
    dump = volume_ok(cluster, "read", "second", "7").splitlines()
    assert dump[1:4] == [
        f"00000000  {' '.join(['00'] * 16)}  |{'.' * 16}|",
        "*",
        "00000060  00 00 00 00 de ad be ef" + " " * 24 + "  |........|",
    ], dump
    assert "hello" in volume_ok(cluster, "read", DEFAULT_VOLUME, "3")  # the first volume is untouched
    listing = volume_ok(cluster, "list")
    assert re.search(r"^second\s", listing, re.MULTILINE) and re.search(r"^vol0\s", listing, re.MULTILINE)

    # --address instead of the state dir
    with VolumeClient(cluster.compute_address()) as client:
        assert client.read_page("second", 7)[100:104] == bytes.fromhex("deadbeef")
        assert client.status(DEFAULT_VOLUME).vdl >= lsn


@pytest.mark.integration
def test_volume_cli_errors_through_a_real_cluster(cluster: Cluster) -> None:
    result = sixfold_volume(cluster, "read", "nosuch", "3")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: NOT_FOUND: ") and "nosuch" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr

    result = sixfold_volume(cluster, "read", DEFAULT_VOLUME, str(1 << 40))
    assert result.returncode == 1 and result.stderr.startswith("error: OUT_OF_RANGE: "), result.stderr
    result = sixfold_volume(cluster, "write", DEFAULT_VOLUME, str(1 << 40), "--text", "x")  # beyond 128 TiB
    assert result.returncode == 1, result.stderr
    assert re.match(r"error: (OUT_OF_RANGE|RESOURCE_EXHAUSTED): .*128 TiB", result.stderr), result.stderr
    result = sixfold_volume(cluster, "write", DEFAULT_VOLUME, "1", "--offset", "4094", "--text", "abc")
    assert result.returncode == 1 and result.stderr.startswith("error: INVALID_ARGUMENT: "), result.stderr

    result = sixfold_volume(cluster, "create", DEFAULT_VOLUME)
    assert result.returncode == 1, result.stderr
    assert f"`sixfold volume status {DEFAULT_VOLUME}` shows it" in result.stderr and "Describe" not in result.stderr

    # the control plane down: the compute node says so in a sentence, no traceback anywhere
    cluster.stop(CONTROL_PLANE)
    for args in (["list"], ["read", "never-opened", "1"]):
        result = sixfold_volume(cluster, *args)
        assert result.returncode == 1 and "the control plane did not answer" in result.stderr, result.stderr
        assert "sixfold status" in result.stderr and "AioRpcError" not in result.stderr, result.stderr
    cluster.start(CONTROL_PLANE)

    # the compute node down: a clear sentence, then fine again after `start`
    cluster.stop(COMPUTE)
    result = sixfold_volume(cluster, "list")
    assert result.returncode == 1 and "(compute: stopped); `sixfold start compute`" in result.stderr, result.stderr
    cluster.start(COMPUTE)
    assert re.search(r"^vol0\s", volume_ok(cluster, "list"), re.MULTILINE)
