from queuectl.cli.main import run_process

run_process()
