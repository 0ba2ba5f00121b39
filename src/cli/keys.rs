//! `switchyard keys create|list|revoke`: the keys file of `[access]`. It holds
//! public material only; a new key's private half is printed once, alone on
//! the last line of stdout. The first key of an empty file must be an
//! `org-admin` key and needs no key to create; after that `keys` needs an
//! `org-admin` (or a `bu-admin` within its scope). Creations and revocations
//! are audit records.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Subcommand;
use rand::RngCore;
use switchyard_core::access::{Action, Grant, KeyRecord, Role, new_key};
use switchyard_core::audit::AuditEntry;
use switchyard_core::config::LoadedPipeline;

use super::access::{self, Caller};
use super::common::{BadInput, PipelineArgs, TableOrJson, load_pipeline};

/// Arguments of `keys`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a key; its private key is printed once, alone on the last line.
    Create(CreateArgs),
    /// The keys, their principals, roles and state.
    List(ListArgs),
    /// Revoke a key: nothing it signs counts from now on.
    Revoke(RevokeArgs),
}

#[derive(clap::Args)]
struct CreateArgs {
    /// Who holds the key (a person or a service).
    #[arg(long)]
    principal: String,
    /// A role (repeat for several): org-admin, bu-admin, team-admin, approver,
    /// submitter, auditor, finance-viewer.
    #[arg(long = "role", required = true, value_parser = parse_role)]
    roles: Vec<Role>,
    /// The org node the roles cover, with everything below it.
    #[arg(long)]
    scope: String,
    #[command(flatten)]
    config: PipelineArgs,
}

#[derive(clap::Args)]
struct ListArgs {
    #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
    format: TableOrJson,
    #[command(flatten)]
    config: PipelineArgs,
}

#[derive(clap::Args)]
struct RevokeArgs {
    /// The key id (as `keys list` shows it).
    key_id: String,
    #[command(flatten)]
    config: PipelineArgs,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown role `{s}`; one of {}", all.join(", "))
    })
}

/// Runs `keys`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::Create(a) => create(a).await,
        KeysCommand::List(a) => list(a),
        KeysCommand::Revoke(a) => revoke(a).await,
    }
}

/// The pipeline, which must have `[access]`, and its keys file's path.
fn load(config: &PipelineArgs) -> anyhow::Result<(LoadedPipeline, PathBuf)> {
    let pipeline = load_pipeline(&config.config, &config.overrides)?;
    let Some(access) = &pipeline.config.access else {
        return Err(BadInput(format!(
            "{} has no [access] section: add one with keys_file = \"keys.toml\" to manage keys",
            config.config.display()
        ))
        .into());
    };
    let path = access.keys_file.clone();
    Ok((pipeline, path))
}

/// Whether the caller may hand out `role` over `scope`: keys are managed
/// within one's scope, and only an `org-admin` makes `org-admin` and
/// `approver` keys. A key names its principal freely, so a `bu-admin` who
/// could make approver keys could approve their own work under another name.
fn may_grant(caller: &Caller, role: Role, scope: &str) -> anyhow::Result<()> {
    caller.record.authorize(Action::ManageKeys, scope)?;
    if matches!(role, Role::OrgAdmin | Role::Approver)
        && !caller.record.holds(Role::OrgAdmin, scope)
    {
        bail!(
            "`{}` may not create {role} keys: that needs the role org-admin over `{scope}` or above it",
            caller.record.principal
        );
    }
    Ok(())
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let (pipeline, path) = load(&args.config)?;
    let scope = args.scope.trim_end_matches('/').to_owned();
    if pipeline.org.node(&scope).is_none() {
        return Err(BadInput(format!(
            "`{scope}` is not a node of the org tree (the org is `{}`; nodes are paths such as `{}/retail`)",
            pipeline.org.name(),
            pipeline.org.name()
        ))
        .into());
    }
    let mut keys = pipeline.keys.clone().unwrap_or_default();
    let first = keys.is_empty();
    let creator = if first {
        if !args.roles.contains(&Role::OrgAdmin) || scope != pipeline.org.name() {
            bail!(
                "the keys file has no key yet: the first key must be an org-admin key over the org (`--role org-admin --scope {}`)",
                pipeline.org.name()
            );
        }
        None
    } else {
        let caller = access::caller(&pipeline, Action::ManageKeys, &scope)?
            .context("the keys file has keys, so creating one needs a key")?;
        for role in &args.roles {
            may_grant(&caller, *role, &scope)?;
        }
        Some(caller.record.principal)
    };
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let grants = args
        .roles
        .iter()
        .map(|role| Grant {
            role: *role,
            scope: scope.clone(),
        })
        .collect();
    let (record, private) = new_key(seed, &args.principal, grants, Utc::now());
    let log = access::audit_log(&pipeline)?;
    access::record(
        log.as_ref(),
        AuditEntry {
            kind: "key".into(),
            subject: record.key_id.clone(),
            node: Some(scope.clone()),
            principal: creator.clone(),
            outcome: "created".into(),
            detail: serde_json::json!({
                "for": record.principal,
                "roles": args.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "bootstrap": first,
            }),
        },
    )
    .await;
    keys.add(record.clone());
    switchyard_loader::save_keys(&path, &keys)
        .with_context(|| format!("writing the keys file {}", path.display()))?;
    eprintln!(
        "created key {} for `{}` ({} over `{scope}`) in {}; its private key follows, shown this once: keep it in a secret store and pass it as SWITCHYARD_API_KEY",
        record.key_id,
        record.principal,
        args.roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        path.display()
    );
    println!("{}", private.expose());
    Ok(ExitCode::SUCCESS)
}

/// Whether the caller may see (and revoke) a key: every grant is within a
/// scope the caller manages.
fn manages(caller: &Caller, key: &KeyRecord) -> bool {
    key.grants.iter().all(|g| {
        caller.record.may(Action::ManageKeys, &g.scope)
            && (g.role != Role::OrgAdmin || caller.record.holds(Role::OrgAdmin, &g.scope))
    })
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let (pipeline, _) = load(&args.config)?;
    let root = access::org_root(&pipeline);
    let caller = access::caller(&pipeline, Action::ManageKeys, &root)?;
    let keys = pipeline.keys.clone().unwrap_or_default();
    if let Some(c) = &caller
        && !c
            .record
            .grants
            .iter()
            .any(|g| g.role.permits(Action::ManageKeys))
    {
        c.record.authorize(Action::ManageKeys, &root)?;
    }
    let visible: Vec<&KeyRecord> = keys
        .keys()
        .iter()
        .filter(|k| caller.as_ref().is_none_or(|c| manages(c, k)))
        .collect();
    if args.format == TableOrJson::Json {
        println!("{}", serde_json::to_string_pretty(&visible)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<18} {:<20} {:<10} {:<20} roles",
        "key_id", "principal", "state", "created"
    );
    for k in visible {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        let roles: Vec<String> = k
            .grants
            .iter()
            .map(|g| format!("{} over {}", g.role, g.scope))
            .collect();
        println!(
            "{:<18} {:<20} {:<10} {:<20} {}",
            k.key_id,
            k.principal,
            state,
            k.created_at.format("%Y-%m-%d %H:%M:%S"),
            roles.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let (pipeline, path) = load(&args.config)?;
    let mut keys = pipeline.keys.clone().unwrap_or_default();
    let Some(target) = keys.get(&args.key_id).cloned() else {
        return Err(BadInput(format!(
            "no key `{}` in {} (see `switchyard keys list`)",
            args.key_id,
            path.display()
        ))
        .into());
    };
    let scope = target
        .grants
        .first()
        .map_or_else(|| access::org_root(&pipeline), |g| g.scope.clone());
    let caller = access::caller(&pipeline, Action::ManageKeys, &scope)?
        .context("revoking a key needs a key")?;
    if !manages(&caller, &target) {
        for g in &target.grants {
            may_grant(&caller, g.role, &g.scope)?;
        }
    }
    if target.revoked_at.is_some() {
        println!("{} was already revoked", target.key_id);
        return Ok(ExitCode::SUCCESS);
    }
    let log = access::audit_log(&pipeline)?;
    access::record(
        log.as_ref(),
        AuditEntry {
            kind: "key".into(),
            subject: target.key_id.clone(),
            node: Some(scope),
            principal: Some(caller.record.principal.clone()),
            outcome: "revoked".into(),
            detail: serde_json::json!({"of": target.principal}),
        },
    )
    .await;
    keys.revoke(&target.key_id, Utc::now());
    switchyard_loader::save_keys(&path, &keys)
        .with_context(|| format!("writing the keys file {}", path.display()))?;
    println!(
        "{} revoked: nothing it signs counts from now on (workers reload the keys file within seconds)",
        target.key_id
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, scope: &str) -> Caller {
        let (record, key) = new_key(
            [7; 32],
            "dana",
            vec![Grant {
                role,
                scope: scope.into(),
            }],
            Utc::now(),
        );
        Caller { key, record }
    }

    /// Approver keys come from an org-admin only: a bu-admin could otherwise
    /// make one under another name and approve the work it submitted.
    #[test]
    fn only_an_org_admin_makes_approver_and_org_admin_keys() {
        let bu_admin = caller(Role::BuAdmin, "acme/retail");
        assert!(may_grant(&bu_admin, Role::Submitter, "acme/retail/support").is_ok());
        assert!(may_grant(&bu_admin, Role::BuAdmin, "acme/retail").is_ok());
        let err = may_grant(&bu_admin, Role::Approver, "acme/retail")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("approver") && err.contains("org-admin"),
            "{err}"
        );
        assert!(may_grant(&bu_admin, Role::OrgAdmin, "acme/retail").is_err());
        assert!(may_grant(&bu_admin, Role::Submitter, "acme/finance").is_err());
        let org_admin = caller(Role::OrgAdmin, "acme");
        assert!(may_grant(&org_admin, Role::Approver, "acme/retail").is_ok());
        assert!(may_grant(&org_admin, Role::OrgAdmin, "acme").is_ok());
    }
}
