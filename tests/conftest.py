"""Shared pytest fixtures.

- `cluster`: a running local cluster (control plane + nodes a1 a2 b1 b2 c1 c2 +
  the compute node `compute` serving volume vol0) in `tmp_path`, started through
  `tools.cluster.Cluster` like `sixfold up` does, and always stopped afterwards,
  whether the test passed or not. Then every process log is scanned: a line
  with " ERROR " or "Traceback" fails the test (as a teardown error naming the
  log lines) unless the test expects it:

      @pytest.mark.expected_log_errors("lost quorum", "Traceback")  # lines containing these are fine
      @pytest.mark.expected_log_errors                              # any error line is fine

  Layout options for `Cluster.up()` come from another marker:

      @pytest.mark.cluster_options(spares=1, heartbeat_timeout_ms=1000)
      @pytest.mark.cluster_options(compute=False)   # storage only: no compute node (saves CPU)

  (Markers on the module, class and function are merged; the function's win.)

- `cluster_dir`: a state dir in `tmp_path` for tests that start a cluster
  themselves (e.g. with `sixfold up --state-dir`); torn down and log-checked
  exactly like `cluster`.

- Every test starts with this process's gRPC identity plaintext (storage/security/transport.py): a test
  that acts on a cluster gets the cluster's `cli` identity as soon as it loads its state (`Cluster._load`),
  and one that serves in-process servers of its own dials them plaintext. Clusters use mutual TLS by
  default; `@pytest.mark.cluster_options(insecure=True)` for a plaintext one. A test that must call what
  `cli` may not (segment reads, hostile admin RPCs) uses `harness_channel(state_dir, role, address)` from
  tools/cluster_tls.py: a certificate of that role from the cluster's CA, for that channel only.

- Hypothesis profiles (tests/depth.py): `thorough` (the default: every property test runs the count it
  writes) and `quick` (a tenth of it). `pytest -m unit` alone loads `quick`, so the unit tier answers in
  under a minute; `--hypothesis-profile thorough` gives it the full counts (as `.ci/run` runs everything).

- `free_port()`: a TCP port on 127.0.0.1 that was free a moment ago
  (`from tests.conftest import free_port`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from sixfold.storage.security import transport
from sixfold.tools.cluster import Cluster
from tests.depth import QUICK_EXAMPLES, THOROUGH_EXAMPLES

settings.register_profile("thorough", max_examples=THOROUGH_EXAMPLES)
settings.register_profile("quick", max_examples=QUICK_EXAMPLES)
QUICK_TIER = "unit"  # the marker expression that loads the quick profile when none is named


def pytest_configure(config: pytest.Config) -> None:
    named = config.getoption("hypothesis_profile", None)
    settings.load_profile(named or ("quick" if config.getoption("markexpr", "") == QUICK_TIER else "thorough"))
    config.addinivalue_line(
        "markers",
        "expected_log_errors(*substrings): process log error lines containing one of these are expected "
        "(no arguments: any error line is expected)",
    )
    config.addinivalue_line(
        "markers", "cluster_options(**kwargs): keyword arguments for Cluster.up() in the `cluster` fixture"
    )


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"hypothesis profile {settings.get_current_profile_name()}: property tests run "
        f"{settings().max_examples}/{THOROUGH_EXAMPLES} of their written example counts"
    )


TIERS = ("unit", "sim", "integration", "chaos")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test carries exactly one tier marker, so `pytest -m unit` (and sim, integration,
    chaos) selects a whole tier: a test without one, or with two, stops the run at collection."""
    wrong = []
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {sorted(tiers) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(f"each test needs exactly one tier marker of {TIERS}:\n  " + "\n  ".join(wrong))


@pytest.fixture(autouse=True)
def plaintext_identity() -> Iterator[None]:
    """No test inherits the TLS identity an earlier test's cluster gave this process."""
    transport.use(None)
    yield
    transport.use(None)


def free_port() -> int:
    """A port that was free on 127.0.0.1 when asked (another process may take it before you bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def allowed_log_errors(request: pytest.FixtureRequest) -> tuple[str, ...] | None:
    """The substrings the test's `expected_log_errors` markers allow; None = no check at all."""
    allowed: list[str] = []
    for marker in request.node.iter_markers("expected_log_errors"):
        if not marker.args:
            return None
        allowed.extend(str(arg) for arg in marker.args)
    return tuple(allowed)


def check_cluster_logs(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """Fail if a process log has an error line the test did not declare expected."""
    allowed = allowed_log_errors(request)
    if allowed is None or not cluster.exists():
        return
    errors = cluster.log_errors(allowed)
    if errors:
        pytest.fail(
            "unexpected errors in process logs (mark the test with @pytest.mark.expected_log_errors(...) "
            "if they are intended):\n" + "\n".join(errors),
            pytrace=False,
        )


@pytest.fixture
def cluster_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A state dir for a cluster the test starts itself; every process recorded there is stopped afterwards."""
    path = tmp_path / "cluster"
    with Cluster(path) as local:
        yield path
    check_cluster_logs(local, request)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running local cluster in tmp_path; stopped after the test, then its logs are checked."""
    options: dict = {"compute": True}
    for marker in reversed(list(request.node.iter_markers("cluster_options"))):
        options.update(marker.kwargs)
    local = Cluster(tmp_path / "cluster")
    with local:  # __exit__ stops every process, also when up() or the test fails
        local.up(**options)
        yield local
    check_cluster_logs(local, request)
