"""What the whole suite shares (the engine's tests, run on their own without Django, do not read this)."""

from vectorindex.conf import DEFAULTS

# Builds and the maintenance scan do not calibrate in the suite, whatever a
# test sets VECTORINDEX to: a calibration runs hundreds of queries, the suite
# builds hundreds of indexes, and tests of other things expect the jobs and
# the probes of an uncalibrated index. tests/settings.py says the same to the
# suite's other processes (workers); tests/index/test_calibration.py turns
# calibration on.
DEFAULTS["CALIBRATION_QUERIES"] = 0

# Nor does migrate build the indexes it leaves not built (BUILD_ON_MIGRATE):
# the suite's tests start from indexes that are not built and build those
# they use. tests/test_build_on_migrate.py turns it on, and the tests that run
# a project's commands in processes of their own (tests/test_schema_changes.py)
# have it on as a project does.
DEFAULTS["BUILD_ON_MIGRATE"] = False
