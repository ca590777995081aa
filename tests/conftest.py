import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def invoke(main, args, capsys):
    """Run a CLI body the way its console script does; returns (exit status, stdout, stderr)."""
    from minedraft.cli.common import run_cli

    try:
        code = run_cli(main, args)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
