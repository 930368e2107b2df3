"""`podium agent`: runs jobs and reports metrics for a conductor over the xySat protocol.

It talks to conductors only over WebSocket and HTTP and imports nothing from api/, storage/ or the rest of
cluster/: it runs on machines with no access to the store. The parts, from the edge in:

- main.py       options (`--url`, `--api-key` | `--token`, ...; `PODIUM_AGENT_*`), enrolment, `serve()`, `run()`
- link.py       the WebSocket and its frames: hello/join/joined, echo, redirect, retry, auth_failure, reconnects
- agent.py      ties the link to the runner: `jobs` reports, `job_log` with offsets and `log_ack`, finishing
- conductor.py  the HTTP calls: satellite/config, input files, upload_job_file, finish_job
- runner.py     the job runner: launches, output to job state and log text, exit handling, abort and kill modes
- plugin.py     what runs a job: a process in its own group, or a built-in task (plugins/: shell, test, ...)
- command.py    a job's argv, script file and account; environ.py its environment; output.py its stdout protocol
- logbuf.py     one job's output by byte offset, kept until acknowledged, spilled to disk within a budget
- state.py      config.json in the data dir; sysinfo.py the hello facts and the processes of the jobs (psutil)
- metrics.py    a job's figures from them, as xySat reports them: cpu, mem, procs, conns (pure code);
                sockets.py the jobs' sockets with their bytes (Linux sock_diag, else psutil)
- hostmon.py    `monitor` each minute and `quickmon` each second, staggered as xySat; monitorplugins.py runs
                the conductor's monitor plugins; hostdata.py (the machine's figures) and hostprocs.py (every
                process and connection) build ServerMonitorData
"""
