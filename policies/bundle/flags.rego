# Feature flags (toggle_flag, on the flagd flag file): which flags may be changed. A toggle takes no pod down, so
# the blast-radius rules about pods leave it alone; its reach is input.blast_radius.flag, and its tier (medium)
# gates it on the diagnosis' confidence like any other change. Scope (allowed_kinds: FeatureFlag), cooldowns per
# flag, the rate limit and freeze windows apply as to every change.
package rootward.policy

import rego.v1

flag_denials(inp, s) := {sprintf("flag %s is not in the allowed flags", [key]) |
	inp.action.kind == "toggle_flag"
	allowed := object.get(s, "allowed_flags", [])
	count(allowed) > 0
	key := inp.action.target.name
	not key in allowed
}

flag_remarks(inp) := {msg |
	flag := object.get(inp, ["blast_radius", "flag"], null)
	is_object(flag)
	flag.targeting == true
	msg := sprintf("flag %s has targeting rules: only evaluations they do not match get the new default variant", [flag.key])
}
