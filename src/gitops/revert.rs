//! The revert branch a hold may push (policy opt-in): one commit on top of
//! the bad revision whose tree is the last good revision's, so merging it
//! undoes every commit that brought the bad release. The commit is made
//! locally by libgit2 in a scratch repository; the fetch and the push go
//! over smart HTTP through the operator's guarded client.

use std::io::Write as _;

use k8s_openapi::jiff::Timestamp;

use super::smart_http::{Remote, SmartHttpError};

/// Why no revert branch was pushed.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error(transparent)]
    Http(#[from] SmartHttpError),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("scratch repository: {0}")]
    Io(#[from] std::io::Error),
    #[error("the revert was cut short: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What to push: the branch, the commits, and the commit's words and time.
#[derive(Clone, Debug, PartialEq)]
pub struct RevertPlan {
    pub url: String,
    /// The last good commit (its tree is the revert's).
    pub good: String,
    /// The bad commit (the revert's parent).
    pub bad: String,
    pub branch: String,
    pub message: String,
    /// The commit's time: the hold's, so a second push makes the same commit.
    pub at: Timestamp,
    /// The Secret with `username` and `password` to push with, if any.
    pub secret: Option<String>,
}

/// The branch of an incident's revert.
pub fn branch_name(incident: &str) -> String {
    format!("healing-guard/revert-{incident}")
}

/// The revert commit's message.
pub fn message(good: &str, bad: &str, holder: &str, owner: &str) -> String {
    format!(
        "Revert {good}..{bad}\n\n\
         The release at {bad} failed and was rolled back by healing-guard-operator\n\
         (incident {holder}), which holds {owner} until Git moves past it.\n\
         This commit restores the tree of {good}; merging it lifts the hold.\n"
    )
}

/// The pushed branch and its commit.
#[derive(Clone, Debug, PartialEq)]
pub struct Pushed {
    pub branch: String,
    pub commit: String,
}

/// Fetches the bad commit's history, makes the revert commit and pushes
/// it to the plan's branch (left as it is when it already points there).
pub async fn push(
    http: &reqwest::Client,
    remote: &Remote,
    plan: &RevertPlan,
) -> Result<Pushed, RevertError> {
    let fetched = remote.fetch_pack(http, &plan.bad).await?;
    let local = plan.clone();
    let (commit, pack) =
        tokio::task::spawn_blocking(move || revert_commit(&fetched, &local)).await??;
    let reference = format!("refs/heads/{}", plan.branch);
    let refs = remote.refs(http, "git-receive-pack").await?;
    let old = refs
        .iter()
        .find(|(name, _)| name == &reference)
        .map_or_else(|| "0".repeat(40), |(_, id)| id.clone());
    if old != commit {
        remote.push(http, (&old, &commit, &reference), pack).await?;
    }
    Ok(Pushed {
        branch: plan.branch.clone(),
        commit,
    })
}

/// The revert commit (its id) and a pack holding only it: the server has
/// its tree and parent already.
fn revert_commit(fetched: &[u8], plan: &RevertPlan) -> Result<(String, Vec<u8>), RevertError> {
    let scratch = tempfile::tempdir()?;
    let repository = git2::Repository::init_bare(scratch.path())?;
    {
        let odb = repository.odb()?;
        let mut writer = odb.packwriter()?;
        writer.write_all(fetched)?;
        writer.commit()?;
    }
    let bad = repository.find_commit(git2::Oid::from_str(&plan.bad)?)?;
    let good = repository.find_commit(git2::Oid::from_str(&plan.good)?)?;
    let tree = good.tree()?;
    let time = git2::Time::new(plan.at.as_second(), 0);
    let signature = git2::Signature::new(
        "healing-guard-operator",
        "healing-guard-operator@users.noreply.invalid",
        &time,
    )?;
    let commit = repository.commit(None, &signature, &signature, &plan.message, &tree, &[&bad])?;
    let mut builder = repository.packbuilder()?;
    builder.insert_object(commit, None)?;
    let mut pack = git2::Buf::new();
    builder.write_buf(&mut pack)?;
    Ok((commit.to_string(), pack.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository with a good and a bad commit, as a pack of everything.
    fn history() -> (tempfile::TempDir, String, String, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let repository = git2::Repository::init_bare(dir.path()).unwrap();
        let signature = git2::Signature::now("t", "t@invalid").unwrap();
        let commit = |content: &str, parents: &[&git2::Commit<'_>]| {
            let blob = repository.blob(content.as_bytes()).unwrap();
            let mut tree = repository.treebuilder(None).unwrap();
            tree.insert("deployment.yaml", blob, 0o100644).unwrap();
            let tree = repository.find_tree(tree.write().unwrap()).unwrap();
            repository
                .commit(
                    Some("HEAD"),
                    &signature,
                    &signature,
                    content,
                    &tree,
                    parents,
                )
                .unwrap()
        };
        let good = commit("image: api:1", &[]);
        let good_commit = repository.find_commit(good).unwrap();
        let bad = commit("image: api:2", &[&good_commit]);
        let mut builder = repository.packbuilder().unwrap();
        let mut walk = repository.revwalk().unwrap();
        walk.push(bad).unwrap();
        builder.insert_walk(&mut walk).unwrap();
        let mut pack = git2::Buf::new();
        builder.write_buf(&mut pack).unwrap();
        (dir, good.to_string(), bad.to_string(), pack.to_vec())
    }

    #[test]
    fn the_revert_restores_the_good_tree_on_top_of_the_bad_commit_and_is_the_same_each_time() {
        let (_dir, good, bad, pack) = history();
        let plan = RevertPlan {
            url: "http://git.invalid/shop.git".into(),
            good: good.clone(),
            bad: bad.clone(),
            branch: branch_name("api-crashloop"),
            message: message(
                &good,
                &bad,
                "shop/api-crashloop",
                "Kustomization flux-system/shop",
            ),
            at: "2026-12-07T03:00:00Z".parse().unwrap(),
            secret: None,
        };
        let (commit, revert_pack) = revert_commit(&pack, &plan).unwrap();
        let (again, _) = revert_commit(&pack, &plan).unwrap();
        assert_eq!(commit, again, "a second push makes the same commit");
        // The pack holds the commit: read it back in another repository.
        let check = tempfile::tempdir().unwrap();
        let repository = git2::Repository::init_bare(check.path()).unwrap();
        let odb = repository.odb().unwrap();
        let mut writer = odb.packwriter().unwrap();
        writer.write_all(&pack).unwrap();
        writer.commit().unwrap();
        let mut writer = odb.packwriter().unwrap();
        writer.write_all(&revert_pack).unwrap();
        writer.commit().unwrap();
        let revert = repository
            .find_commit(git2::Oid::from_str(&commit).unwrap())
            .unwrap();
        assert_eq!(revert.parent_id(0).unwrap().to_string(), bad);
        let good_tree = repository
            .find_commit(git2::Oid::from_str(&good).unwrap())
            .unwrap()
            .tree_id();
        assert_eq!(revert.tree_id(), good_tree);
        assert!(
            revert
                .message()
                .unwrap()
                .starts_with(&format!("Revert {good}..{bad}"))
        );
        assert_eq!(
            branch_name("api-crashloop"),
            "healing-guard/revert-api-crashloop"
        );
    }

    #[test]
    fn a_good_revision_outside_the_fetched_history_is_an_error() {
        let (_dir, _good, bad, pack) = history();
        let plan = RevertPlan {
            url: String::new(),
            good: "1".repeat(40),
            bad,
            branch: branch_name("x"),
            message: "m".into(),
            at: Timestamp::UNIX_EPOCH,
            secret: None,
        };
        assert!(matches!(
            revert_commit(&pack, &plan),
            Err(RevertError::Git(_))
        ));
    }
}
