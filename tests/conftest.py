"""What the whole suite shares (the engine's tests, run on their own without Django, do not read this)."""

from vectorindex.conf import DEFAULTS

# Builds and the maintenance scan do not calibrate in the suite, whatever a
# test sets VECTORINDEX to: a calibration runs hundreds of queries, the suite
# builds hundreds of indexes, and tests of other things expect the jobs and
# the probes of an uncalibrated index. tests/settings.py says the same to the
# suite's other processes (workers); tests/index/test_calibration.py turns
# calibration on.
DEFAULTS["CALIBRATION_QUERIES"] = 0
