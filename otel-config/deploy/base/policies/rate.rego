# Cooldown per object, a global rate limit, and change-freeze windows. The history comes from the audit log.
package rootward.policy

import rego.v1

rate_denials(inp, s) := (cooldown | limit) | freeze if {
	history := object.get(inp, "history", {})
	cooldown := {msg |
		changes(inp)
		ago := history.last_action_on_target_s_ago
		is_number(ago)
		ago < s.cooldown_s
		msg := sprintf("cooldown: %s was acted on %d s ago (wait %d s)", [
			inp.action.target_id, round(ago), round(s.cooldown_s - ago),
		])
	}
	limit := {msg |
		changes(inp)
		history.actions_last_hour >= s.max_actions_per_hour
		msg := sprintf("rate limit: %d actions in the last hour (at most %d)", [
			history.actions_last_hour, s.max_actions_per_hour,
		])
	}
	freeze := {sprintf("change freeze until %s: %s", [w.end_rfc3339, w.reason]) |
		changes(inp)
		some w in s.freeze_windows
		w.start <= inp.now.unix
		inp.now.unix < w.end
	}
}
