# Confidence gating by risk tier: low runs on its own; medium runs on its own when the diagnosis is confident
# enough; high always waits for a human, who sees the whole reasoning.
package rootward.policy

import rego.v1

gating_approvals(inp, s) := high | medium if {
	high := {"high-risk action: a human approves" | inp.action.tier == "high"}
	medium := {msg |
		inp.action.tier == "medium"
		confidence := object.get(inp, ["diagnosis", "confidence"], 0)
		confidence < s.medium_confidence
		msg := sprintf("medium-risk action and the diagnosis confidence %v is under %v", [confidence, s.medium_confidence])
	}
}

gating_denials(inp) := {sprintf("unknown risk tier %v", [tier]) |
	tier := object.get(inp, ["action", "tier"], null)
	not tier in {"low", "medium", "high"}
}
