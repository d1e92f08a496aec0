# METADATA
# title: chanscale main decision
# description: >-
#   Combines the guards into the one decision document {allow, replicas, reasons, escalated, labels, limitedBy}
#   the operator asks for (spec.policy.path default chanscale/main/decision). Denials (windows, error brake) win
#   over clamps; clamps (step, caps, budget) are applied together and the tightest comes first in the reasons;
#   notes (escalation, overrides) follow. A limit never reverses the direction of the proposal: a clamp that
#   would fall behind the current count clamps to the current count (allow stays true: only denials deny).
# entrypoint: true
package chanscale.main

import data.chanscale.budget
import data.chanscale.caps
import data.chanscale.errorbrake
import data.chanscale.escalation
import data.chanscale.lib
import data.chanscale.step
import data.chanscale.windows

# Deny order: a freeze is the most restrictive, then the error brake.
guard_rank := {"windows": 0, "errorBrake": 1, "caps": 2, "budget": 3, "step": 4}

denials := [[guard_rank[d.guard], d.reason, d.guard] | some d in (windows.denials | errorbrake.denials)]

sorted_denials := sort(denials)

limits := (step.limits | caps.limits) | budget.limits

# Tightest upper bound first; ties ordered by guard rank.
uppers := sort([[l.bound, guard_rank[l.guard], l.reason, l.guard] | some l in limits; l.kind == "upper"])

# Tightest lower bound (the highest) first.
lowers := sort([[0 - l.bound, guard_rank[l.guard], l.reason, l.guard] | some l in limits; l.kind == "lower"])

notes := sort((((escalation.notes | caps.notes) | errorbrake.notes) | lib.locked_notes))

target := lib.current if {
	count(denials) > 0
} else := max([lib.current, min(array.concat([lib.proposed], [u[0] | some u in uppers]))]) if {
	lib.scaling_up
} else := min([lib.current, max(array.concat([lib.proposed], [(0 - l[0]) | some l in lowers]))]) if {
	lib.scaling_down
} else := lib.current

binding := [[d[2], d[1]] | some d in sorted_denials] if {
	count(denials) > 0
} else := [[u[3], u[2]] | some u in uppers] if {
	lib.scaling_up
} else := [[l[3], l[2]] | some l in lowers]

# Only a denial (window, brake) refuses; a bound that leaves no room is a clamp to the current count.
default allow := false

allow if count(denials) == 0

summary := [sprintf("no change proposed (%d replicas)", [lib.current])] if {
	lib.proposed == lib.current
} else := [] if {
	count(binding) > 0
} else := [sprintf("allowed: no guard limits %d -> %d replicas", [lib.current, lib.proposed])]

reasons := array.concat(array.concat(summary, [b[1] | some b in binding]), notes)

limited_by := [g | some i, b in binding; g := b[0]; not seen_before(i, g)]

seen_before(i, g) if {
	some j, b in binding
	j < i
	b[0] == g
}

default decision := {
	"allow": false,
	"reasons": ["main: input is incomplete (needs replicas.current, replicas.recommended, pool.metadata and now; see policies/input.schema.json): denying"],
	"escalated": false,
	"labels": {},
	"limitedBy": ["main"],
}

decision := {
	"allow": allow,
	"replicas": target,
	"reasons": reasons,
	"escalated": escalation.escalated,
	"labels": escalation.labels,
	"limitedBy": limited_by,
}
