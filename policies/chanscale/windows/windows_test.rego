package chanscale.windows_test

import data.chanscale.fixtures
import data.chanscale.windows

# 2026-11-23 is a Monday; 12:00 UTC is 13:00 in Berlin (CET).
at(now, cur, rec, ws) := object.union(fixtures.proposal(cur, rec, {"windows": {"windows": ws}}), {"now": now})

monday_noon := "2026-11-23T12:00:00Z"

reasons := {d.reason | some d in windows.denials}

test_no_windows if {
	count(windows.denials) == 0 with input as fixtures.proposal(2, 8, {})
}

test_freeze_blocks_any_change if {
	ws := [{"name": "release", "start": "11:00", "end": "13:00"}]
	reasons == {"windows: freeze window \"release\" is active (11:00-13:00 UTC): no scaling"} with input as at(monday_noon, 2, 8, ws)
	count(reasons) == 1 with input as at(monday_noon, 8, 2, ws)
}

test_freeze_ignores_no_change if {
	ws := [{"name": "release", "start": "11:00", "end": "13:00"}]
	count(reasons) == 0 with input as at(monday_noon, 4, 4, ws)
}

test_outside_window if {
	ws := [{"name": "release", "start": "13:00", "end": "14:00"}]
	count(reasons) == 0 with input as at(monday_noon, 2, 8, ws)
}

test_timezone_aware if {
	berlin := [{"name": "b", "start": "12:30", "end": "14:00", "timezone": "Europe/Berlin"}]
	count(reasons) == 1 with input as at(monday_noon, 2, 8, berlin)
	utc := [{"name": "u", "start": "12:30", "end": "14:00"}]
	count(reasons) == 0 with input as at(monday_noon, 2, 8, utc)
}

test_days if {
	count(reasons) == 1 with input as at(monday_noon, 2, 8, [{"start": "11:00", "end": "13:00", "days": ["Mon", "Wed"]}])
	count(reasons) == 0 with input as at(monday_noon, 2, 8, [{"start": "11:00", "end": "13:00", "days": ["tuesday"]}])
}

test_overnight_before_midnight if {
	ws := [{"name": "night", "start": "22:00", "end": "06:00", "days": ["Mon"]}]
	reasons == {"windows: freeze window \"night\" is active (22:00-06:00 UTC on Mon): no scaling"} with input as at("2026-11-23T23:00:00Z", 2, 8, ws)
	count(reasons) == 0 with input as at("2026-11-23T21:00:00Z", 2, 8, ws)
}

test_overnight_after_midnight_belongs_to_start_day if {
	ws := [{"name": "night", "start": "22:00", "end": "06:00", "days": ["Mon"]}]
	count(reasons) == 1 with input as at("2026-11-24T03:00:00Z", 2, 8, ws)
	tue := [{"name": "night", "start": "22:00", "end": "06:00", "days": ["Tue"]}]
	count(reasons) == 0 with input as at("2026-11-24T03:00:00Z", 2, 8, tue)
}

test_no_scale_down if {
	ws := [{"name": "peak", "mode": "noScaleDown", "start": "08:00", "end": "20:00"}]
	reasons == {"windows: noScaleDown window \"peak\" is active (08:00-20:00 UTC): no scale-down"} with input as at(monday_noon, 8, 2, ws)
	count(reasons) == 0 with input as at(monday_noon, 2, 8, ws)
}

test_no_scale_up if {
	ws := [{"name": "cost", "mode": "noScaleUp", "start": "08:00", "end": "20:00"}]
	count(reasons) == 1 with input as at(monday_noon, 2, 8, ws)
	count(reasons) == 0 with input as at(monday_noon, 8, 2, ws)
}

test_absolute_window if {
	ws := [{"name": "black-friday", "from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z"}]
	reasons == {"windows: freeze window \"black-friday\" is active (2026-11-23T00:00:00Z to 2026-11-24T00:00:00Z): no scaling"} with input as at(monday_noon, 2, 8, ws)
	count(reasons) == 0 with input as at("2026-11-24T00:00:00Z", 2, 8, ws)
}

test_unreadable_window_holds if {
	ws := [{"start": "11:00", "end": "13:00", "timezone": "Mars/Olympus"}]
	reasons == {"windows: window \"unnamed\" cannot be read (needs start/end \"HH:MM\", a known timezone and days as a list, or RFC 3339 from/to; mode freeze|noScaleDown|noScaleUp): holding until it is fixed"} with input as at(monday_noon, 2, 8, ws)
	count(reasons) == 1 with input as at(monday_noon, 2, 8, [{"start": "11", "end": "13:00"}])
	count(reasons) == 1 with input as at(monday_noon, 2, 8, [{"start": "11:00", "end": "13:00", "mode": "sometimes"}])
	count(reasons) == 1 with input as at(monday_noon, 2, 8, [{"from": "yesterday", "to": "2026-11-24T00:00:00Z"}])
	count(reasons) == 1 with input as at(monday_noon, 2, 8, [{"start": "11:00", "end": "13:00", "days": "Mon"}])
}
