"""Lab hook (never on a user's path): set Python's GIL switch interval in a `kanitts serve`
process started with ``PYTHONPATH=scripts/lab_site:...`` and ``KANITTS_LAB_SWITCH_INTERVAL_S``.

Used by ``scripts/same_run_device.sh native_switch`` to measure, on the same device and run as
the default, how much of a burst's time to first audio is the native engine thread waiting
for the GIL (Python hands it over every ``sys.getswitchinterval()`` seconds, 5 ms by default).
"""

import os
import sys

_value = os.environ.get("KANITTS_LAB_SWITCH_INTERVAL_S")
if _value and any(a == "serve" for a in sys.argv[1:3]):
    sys.setswitchinterval(float(_value))
