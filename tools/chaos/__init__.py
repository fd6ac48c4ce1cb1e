"""Chaos testing: operation histories, fault scenarios and the checkers that judge them.

Where things live:
- the run: `runner` (one scenario end to end), `workload` (the clients), `verdict`
  (every criterion), `run_checks` (MTR atomicity, segment convergence), `report`
  (result, output files, the verdict table);
- the faults: `faults` (the nemesis), `fault_log`, `disk_rot`, `lmdb_pages`, `second_writer`;
- the scenarios: `scenarios` (the registry), `scenario_base` (what a scenario sees),
  `scenarios_crash`, `scenarios_writer`, `scenarios_network`, `scenarios_integrity`
  (with `integrity_probes`), `scenarios_membership`, `scenarios_time_travel` (with
  `time_travel_probe`);
- the history and its checkers (pure): `history`, `checkers`, `linearizability`, `check_support`,
  `lsn_check` (reads judged by LSN through clones and backtracks).
"""
