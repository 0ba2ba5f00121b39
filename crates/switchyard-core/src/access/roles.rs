//! The roles, what each may do, and the check that a principal's grants cover
//! an action on an org node.

use serde::{Deserialize, Serialize};

/// A role, granted over an org node and everything below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including keys for the whole org.
    OrgAdmin,
    /// A business unit's keys, cancels, reports; with `approver`, may override a budget hold.
    BuAdmin,
    /// A team's cancels and reports.
    TeamAdmin,
    /// Approves or rejects held work.
    Approver,
    /// Submits (signs) jobs and batches.
    Submitter,
    /// Reads and verifies the audit log, reports and the org's state.
    Auditor,
    /// Reads costs: reports and the org's budgets.
    FinanceViewer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 7] = [
        Role::OrgAdmin,
        Role::BuAdmin,
        Role::TeamAdmin,
        Role::Approver,
        Role::Submitter,
        Role::Auditor,
        Role::FinanceViewer,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::OrgAdmin => "org-admin",
            Role::BuAdmin => "bu-admin",
            Role::TeamAdmin => "team-admin",
            Role::Approver => "approver",
            Role::Submitter => "submitter",
            Role::Auditor => "auditor",
            Role::FinanceViewer => "finance-viewer",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role allows `action` (within its scope).
    pub fn permits(self, action: Action) -> bool {
        use Action::*;
        use Role::*;
        match action {
            ManageKeys => matches!(self, OrgAdmin | BuAdmin),
            Submit => matches!(self, OrgAdmin | BuAdmin | TeamAdmin | Submitter),
            Approve | OverrideBudget => self == Approver,
            ListApprovals => matches!(self, OrgAdmin | BuAdmin | TeamAdmin | Approver | Auditor),
            Cancel => matches!(self, OrgAdmin | BuAdmin | TeamAdmin | Submitter),
            Report | OrgShow => {
                matches!(
                    self,
                    OrgAdmin | BuAdmin | TeamAdmin | Auditor | FinanceViewer
                )
            }
            Audit => matches!(self, OrgAdmin | Auditor),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a principal may be allowed to do on an org node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Create and revoke keys with roles at or below the node.
    ManageKeys,
    /// Submit jobs for projects at or below the node (sign them).
    Submit,
    /// Approve or reject held work of the node.
    Approve,
    /// Approve work held by the node's budget policy: an override of the cap.
    /// Needs `approver` and, besides, `org-admin` or `bu-admin` over the node.
    OverrideBudget,
    /// List pending approvals.
    ListApprovals,
    /// Cancel batches.
    Cancel,
    /// Read cost reports.
    Report,
    /// Read the org tree with budgets and spend.
    OrgShow,
    /// Verify and export the audit log.
    Audit,
}

impl Action {
    /// The roles that allow this action (for refusal messages).
    pub fn roles(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| r.permits(self)).collect()
    }

    /// What the action is called in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Action::ManageKeys => "manage keys",
            Action::Submit => "submit jobs",
            Action::Approve => "approve or reject held work",
            Action::OverrideBudget => "approve work held by a budget (an override of the cap)",
            Action::ListApprovals => "list approvals",
            Action::Cancel => "cancel batches",
            Action::Report => "read cost reports",
            Action::OrgShow => "read the org's budgets",
            Action::Audit => "read the audit log",
        }
    }
}

/// Why a principal may not do something: what it needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{principal}` may not {action} on `{node}`: that needs the role {roles} over `{node}` or above it"
)]
pub struct Denied {
    /// Who asked.
    pub principal: String,
    /// What.
    pub action: &'static str,
    /// Where.
    pub node: String,
    /// The roles that would allow it, e.g. `approver` or `org-admin or bu-admin`.
    pub roles: String,
}

/// Whether a grant's scope covers `node`: the same node or one below it.
pub fn covers(scope: &str, node: &str) -> bool {
    node == scope
        || node
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_their_node_and_below_only() {
        assert!(covers("acme/retail", "acme/retail"));
        assert!(covers("acme/retail", "acme/retail/support/triage"));
        assert!(!covers("acme/retail", "acme/retailers"));
        assert!(!covers("acme/retail/support", "acme/retail"));
    }

    #[test]
    fn each_role_is_allowed_its_actions_and_refused_the_rest() {
        let table: &[(Role, &[Action])] = &[
            (
                Role::OrgAdmin,
                &[
                    Action::ManageKeys,
                    Action::Submit,
                    Action::ListApprovals,
                    Action::Cancel,
                    Action::Report,
                    Action::OrgShow,
                    Action::Audit,
                ],
            ),
            (
                Role::BuAdmin,
                &[
                    Action::ManageKeys,
                    Action::Submit,
                    Action::ListApprovals,
                    Action::Cancel,
                    Action::Report,
                    Action::OrgShow,
                ],
            ),
            (
                Role::TeamAdmin,
                &[
                    Action::Submit,
                    Action::ListApprovals,
                    Action::Cancel,
                    Action::Report,
                    Action::OrgShow,
                ],
            ),
            (
                Role::Approver,
                &[
                    Action::Approve,
                    Action::OverrideBudget,
                    Action::ListApprovals,
                ],
            ),
            (Role::Submitter, &[Action::Submit, Action::Cancel]),
            (
                Role::Auditor,
                &[
                    Action::ListApprovals,
                    Action::Report,
                    Action::OrgShow,
                    Action::Audit,
                ],
            ),
            (Role::FinanceViewer, &[Action::Report, Action::OrgShow]),
        ];
        let all = [
            Action::ManageKeys,
            Action::Submit,
            Action::Approve,
            Action::OverrideBudget,
            Action::ListApprovals,
            Action::Cancel,
            Action::Report,
            Action::OrgShow,
            Action::Audit,
        ];
        for (role, allowed) in table {
            for action in all {
                assert_eq!(
                    role.permits(action),
                    allowed.contains(&action),
                    "{role} {action:?}"
                );
            }
        }
    }
}
