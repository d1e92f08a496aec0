# METADATA
# title: step limits
# description: >-
#   At most +maxUp / -maxDown replicas per decision. Off unless maxUp or maxDown is set. While the pool is
#   escalated (chanscale.escalation) the upward step is the escalation's maxUp, or maxUp x stepFactor.
package chanscale.step

import data.chanscale.escalation
import data.chanscale.lib

p := lib.params("step")

max_up := p.maxUp if {
	is_number(p.maxUp)
	not escalation.escalated
}

max_up := escalation.max_up(p.maxUp) if {
	is_number(p.maxUp)
	escalation.escalated
}

max_down := p.maxDown if is_number(p.maxDown)

while_escalated := " while escalated" if escalation.escalated

else := ""

limits contains {"guard": "step", "kind": "upper", "bound": bound, "reason": msg} if {
	lib.scaling_up
	bound := lib.current + max_up
	bound < lib.proposed
	msg := sprintf(
		"step: at most +%d replicas per decision%s (proposed +%d)",
		[max_up, while_escalated, lib.proposed - lib.current],
	)
}

limits contains {"guard": "step", "kind": "lower", "bound": bound, "reason": msg} if {
	lib.scaling_down
	bound := lib.current - max_down
	bound > lib.proposed
	msg := sprintf("step: at most -%d replicas per decision (proposed -%d)", [max_down, lib.current - lib.proposed])
}
