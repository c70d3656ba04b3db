# The decision every request gets: deny when any rule denies, else needs_approval when any rule asks for a human
# and no human has approved yet, else allow. Policies (shipped and your own, in package rootward.policy) add
# reasons to the sets `deny` and `approval`; `notes` are shown but decide nothing. The input document is described
# in policies/README.md (schema 1); the settings are data.rootward.settings (the `policies.rules` configuration).
#
# The shipped rules are functions of (input, settings), so that tests call them without `with` (regopy 1.5
# crashes on `with input as` over rules like these): see policy_test.rego.
package rootward.policy

import rego.v1

settings := data.rootward.settings

deny contains msg if {
	some msg in denials(input, settings)
}

approval contains msg if {
	some msg in approvals(input, settings)
}

notes contains msg if {
	some msg in remarks(input)
}

denials(inp, s) := (((scope_denials(inp, s) | blast_denials(inp, s)) | gating_denials(inp)) | rate_denials(inp, s)) | flag_denials(inp, s)

approvals(inp, s) := blast_approvals(inp) | gating_approvals(inp, s)

remarks(inp) := (approved_by | dependents) | flag_remarks(inp) if {
	approved_by := {sprintf("approved by %s", [inp.approval.approved_by]) | approved(inp)}
	dependents := {sprintf("%s depends on the target", [d]) | some d in object.get(inp, ["blast_radius", "dependents"], [])}
}

approved(inp) if {
	is_string(inp.approval.approved_by)
	inp.approval.approved_by != ""
}

# A request that changes nothing needs none of the rules about change.
changes(inp) if {
	not inp.action.read_only
}

result := "deny" if {
	count(deny) > 0
} else := "needs_approval" if {
	count(approval) > 0
	not approved(input)
} else := "allow"

decision := {
	"result": result,
	"deny": deny,
	"approval": approval,
	"notes": notes,
}
