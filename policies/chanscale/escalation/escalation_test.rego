package chanscale.escalation_test

import data.chanscale.escalation
import data.chanscale.fixtures

backlog(n, params) := object.union(fixtures.proposal(2, 8, params), {"signals": {"backlog": n}})

test_default_threshold if {
	escalation.escalated with input as backlog(10000, {})
	not escalation.escalated with input as backlog(9999, {})
	escalation.labels == {"chanscale.dev/escalated": "true"} with input as backlog(10000, {})
	escalation.labels == {} with input as backlog(10, {})
	escalation.notes == {"escalation: backlog 25000 >= 10000 messages: pool escalated, larger upward steps allowed"} with input as backlog(25000, {})
}

test_missing_backlog_not_escalated if {
	not escalation.escalated with input as backlog(null, {})
}

test_pool_threshold if {
	escalation.escalated with input as backlog(600, {"escalation": {"backlogThreshold": 500}})
}

test_disabled if {
	not escalation.escalated with input as backlog(50000, {"escalation": {"enabled": false}})
}

test_max_up if {
	escalation.max_up(4) == 16 with input as backlog(50000, {})
	escalation.max_up(4) == 8 with input as backlog(50000, {"escalation": {"stepFactor": 2}})
	escalation.max_up(4) == 25 with input as backlog(50000, {"escalation": {"maxUp": 25}})
}

test_factor_default_without_config if {
	escalation.max_up(3) == 12 with input as backlog(50000, {"escalation": {"backlogThreshold": 1}})
		with data.chanscale.config as {}
}

test_enabled_without_config_flag if {
	escalation.escalated with input as backlog(600, {"escalation": {"backlogThreshold": 500}})
		with data.chanscale.config as {}
}
