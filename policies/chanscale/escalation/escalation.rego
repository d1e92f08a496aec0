# METADATA
# title: backlog escalation
# description: >-
#   Above a very large backlog (backlogThreshold, default 10000 messages) the pool is escalated: the decision
#   says escalated: true and carries the label chanscale.dev/escalated=true so the operator can set a condition,
#   and the step guard allows a bigger upward step (maxUp, else the step's maxUp x stepFactor, default 4).
#   Escalation never lifts hard caps, budgets, windows or the error brake.
package chanscale.escalation

import data.chanscale.lib

p := lib.params("escalation")

default escalated := false

escalated if {
	not p.enabled == false
	is_number(p.backlogThreshold)
	is_number(input.signals.backlog)
	input.signals.backlog >= p.backlogThreshold
}

factor := p.stepFactor if is_number(p.stepFactor)

else := 4

# max_up(base) is the upward step allowed while escalated, given the step guard's normal maxUp.
max_up(base) := p.maxUp if is_number(p.maxUp)

else := base * factor

default labels := {}

labels := {"chanscale.dev/escalated": "true"} if escalated

notes contains msg if {
	escalated
	msg := sprintf(
		"escalation: backlog %v >= %v messages: pool escalated, larger upward steps allowed",
		[input.signals.backlog, p.backlogThreshold],
	)
}
