"""Host-side checks on the guest run and on the other profiles."""

from __future__ import annotations

import pytest

from fastsock.vm import dmesg_problems


@pytest.mark.host
def test_guest_dmesg_is_clean(guest) -> None:
    assert "Linux version" in guest.result.dmesg, "the guest's dmesg was not captured"
    bad = dmesg_problems(guest.result.dmesg)
    assert not bad, "guest dmesg reports:\n" + "\n".join(bad)


@pytest.mark.host
def test_guest_command_succeeded(guest) -> None:
    assert guest.result.returncode == 0, guest.result.stdout[-3000:] + guest.result.stderr[-3000:]
