# METADATA
# title: maintenance windows and freezes
# description: >-
#   Time-zone-aware windows during which scaling is frozen (mode freeze, the default), or only scale-down
#   (noScaleDown) or only scale-up (noScaleUp) is refused. A window is either recurring
#   {start: "HH:MM", end: "HH:MM", days: ["Mon", ...], timezone: "Europe/Berlin"} (end before start crosses
#   midnight; days name the day the window starts; no days = every day) or absolute {from, to} (RFC 3339).
#   Evaluated at input.now, never the wall clock, so a decision can be replayed. A window that cannot be read
#   (bad time, unknown time zone) holds the pool and says so: a freeze that silently lapses is worse.
package chanscale.windows

import data.chanscale.lib

p := lib.params("windows")

now_ns := time.parse_rfc3339_ns(input.now)

day_ns := ((24 * 60) * 60) * 1000000000

windows := [w | some w in p.windows; is_object(w)]

label(w) := w.name if is_string(w.name)

else := "unnamed"

mode(w) := object.get(w, "mode", "freeze")

tz(w) := object.get(w, "timezone", "UTC")

# minutes("HH:MM") is the minute of the day.
minutes(s) := (to_number(parts[0]) * 60) + to_number(parts[1]) if {
	parts := split(s, ":")
	count(parts) == 2
}

minute_of_day(ns, zone) := (c[0] * 60) + c[1] if {
	c := time.clock([ns, zone])
}

day_ok(w, _, _) if not w.days

day_ok(w, ns, zone) if {
	day := lower(substring(time.weekday([ns, zone]), 0, 3))
	some d in w.days
	lower(substring(d, 0, 3)) == day
}

absolute(w) if w.from

recurring(w) if not absolute(w)

days_readable(w) if not w.days

days_readable(w) if is_array(w.days)

valid(w) if {
	absolute(w)
	time.parse_rfc3339_ns(w.from)
	time.parse_rfc3339_ns(w.to)
	mode(w) in {"freeze", "noScaleDown", "noScaleUp"}
}

valid(w) if {
	recurring(w)
	minutes(w.start) >= 0
	minutes(w.end) >= 0
	minute_of_day(now_ns, tz(w)) >= 0
	days_readable(w)
	mode(w) in {"freeze", "noScaleDown", "noScaleUp"}
}

active(w) if {
	absolute(w)
	now_ns >= time.parse_rfc3339_ns(w.from)
	now_ns < time.parse_rfc3339_ns(w.to)
}

# Same-day window.
active(w) if {
	recurring(w)
	minutes(w.start) <= minutes(w.end)
	m := minute_of_day(now_ns, tz(w))
	minutes(w.start) <= m
	m < minutes(w.end)
	day_ok(w, now_ns, tz(w))
}

# Overnight window, the part before midnight.
active(w) if {
	recurring(w)
	minutes(w.start) > minutes(w.end)
	minute_of_day(now_ns, tz(w)) >= minutes(w.start)
	day_ok(w, now_ns, tz(w))
}

# Overnight window, the part after midnight: it started the day before.
active(w) if {
	recurring(w)
	minutes(w.start) > minutes(w.end)
	minute_of_day(now_ns, tz(w)) < minutes(w.end)
	day_ok(w, now_ns - day_ns, tz(w))
}

describe(w) := sprintf("%s to %s", [w.from, w.to]) if absolute(w)

else := sprintf("%s-%s %s%s", [w.start, w.end, tz(w), days_text(w)])

days_text(w) := sprintf(" on %s", [concat(",", w.days)]) if w.days

else := ""

blocks(w) if mode(w) == "freeze"

blocks(w) if {
	mode(w) == "noScaleDown"
	lib.scaling_down
}

blocks(w) if {
	mode(w) == "noScaleUp"
	lib.scaling_up
}

verb := {"freeze": "no scaling", "noScaleDown": "no scale-down", "noScaleUp": "no scale-up"}

denials contains {"guard": "windows", "reason": msg} if {
	lib.proposed != lib.current
	some w in windows
	valid(w)
	active(w)
	blocks(w)
	msg := sprintf("windows: %s window %q is active (%s): %s", [mode(w), label(w), describe(w), verb[mode(w)]])
}

denials contains {"guard": "windows", "reason": msg} if {
	lib.proposed != lib.current
	some w in windows
	not valid(w)
	msg := sprintf(
		"windows: window %q cannot be read (needs start/end \"HH:MM\", a known timezone and days as a list, or RFC 3339 from/to; mode freeze|noScaleDown|noScaleUp): holding until it is fixed",
		[label(w)],
	)
}
