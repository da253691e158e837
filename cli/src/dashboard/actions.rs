//! The operator actions: what each is called, what it applies to (a stage
//! or a batch), the form the pages show for it, and running it.
//!
//! Every action goes through one route, `POST /action/{name}` with the form
//! fields `target` (the stage or batch id), `csrf` and `token`; the route
//! checks the token, CSRF and origin once for all of them (see
//! [`super::security`]), then calls [`run`]. The pages render the forms of
//! [`ACTIONS`] by scope, so adding an action is one entry in [`ACTIONS`] and
//! one arm in [`run`].

use engage_model::envelope::StageName;
use engage_model::layout::valid_batch_id;
use engage_runtime::batch_control::Changed;
use engage_runtime::config::FleetConfig;

use super::error::DashboardError;

/// What an action applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A stage (`target` is its name); its form is on the stage's DLQ page.
    Stage,
    /// A batch (`target` is its id); its form is on the batch's page.
    Batch,
}

/// One action as the pages offer it.
#[derive(Debug)]
pub(crate) struct ActionSpec {
    /// Its name in `POST /action/{name}`.
    pub name: &'static str,
    /// What it applies to.
    pub scope: Scope,
    /// The button's text (the target is appended).
    pub button: &'static str,
    /// One sentence on what it does, shown above the button (`TARGET` is
    /// replaced by the target).
    pub describe: &'static str,
}

/// Every action the dashboard offers.
pub(crate) const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        name: "replay",
        scope: Scope::Stage,
        button: "Replay",
        describe: "Moves every decodable dead letter of TARGET back to its work queue (attempts \
                   reset), like engage dlq replay TARGET; undecodable ones stay.",
    },
    ActionSpec {
        name: "retry",
        scope: Scope::Batch,
        button: "Retry failed items of",
        describe: "Re-runs every failed item of the ended batch TARGET, like engage retry \
                   TARGET; its report is rewritten when they finish.",
    },
    ActionSpec {
        name: "pause",
        scope: Scope::Batch,
        button: "Pause",
        describe: "Workers park the jobs of TARGET (no attempt spent) until it is resumed, like \
                   engage pause TARGET; other batches keep flowing.",
    },
    ActionSpec {
        name: "resume",
        scope: Scope::Batch,
        button: "Resume",
        describe: "Ends the pause of TARGET and sends its parked jobs back, like engage resume \
                   TARGET.",
    },
    ActionSpec {
        name: "cancel",
        scope: Scope::Batch,
        button: "Cancel",
        describe: "Ends TARGET as cancelled: its open items become final as cancelled and its \
                   queued jobs are dropped unrun, like engage cancel TARGET. It cannot be undone.",
    },
];

/// The action called `name`.
pub(crate) fn find(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.name == name)
}

/// The actions of `scope`, in [`ACTIONS`] order.
pub(crate) fn of_scope(scope: Scope) -> impl Iterator<Item = &'static ActionSpec> {
    ACTIONS.iter().filter(move |a| a.scope == scope)
}

/// What an action is applied to, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A stage.
    Stage(StageName),
    /// A batch id (valid as a batch id).
    Batch(String),
}

impl Target {
    /// `raw` read as the target of `spec`; `NotFound` when it is none.
    pub(crate) fn parse(spec: &ActionSpec, raw: &str) -> Result<Self, DashboardError> {
        match spec.scope {
            Scope::Stage => StageName::parse(raw)
                .map(Self::Stage)
                .ok_or_else(|| DashboardError::NotFound("no such stage".into())),
            Scope::Batch if valid_batch_id(raw) => Ok(Self::Batch(raw.to_string())),
            Scope::Batch => Err(DashboardError::NotFound("no such batch".into())),
        }
    }

    /// The page to go back to.
    pub(crate) fn back(&self) -> String {
        match self {
            Self::Stage(s) => format!("/dlq/{s}"),
            Self::Batch(b) => format!("/batch/{b}"),
        }
    }
}

/// What an action did, for its answer page (plain text, escaped there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Done {
    /// The heading.
    pub title: String,
    /// What happened, one line each (the first has `id="result"`).
    pub lines: Vec<String>,
    /// Where to go back to.
    pub back: String,
}

/// Runs `spec` on `target` (the caller checked token, CSRF and origin).
pub(crate) async fn run(
    cfg: &FleetConfig,
    spec: &ActionSpec,
    target: &Target,
) -> Result<Done, DashboardError> {
    match (spec.name, target) {
        ("replay", Target::Stage(s)) => {
            let r =
                crate::fleet::dlq_replay(cfg, *s, &crate::fleet::ReplayFilter::default()).await?;
            tracing::info!(stage = %s, replayed = r.replayed, undecodable = r.undecodable, "dashboard replay");
            let mut lines = vec![format!(
                "{s}: replayed {}; {} undecodable left in the dead-letter queue",
                r.replayed, r.undecodable
            )];
            if r.reopened > 0 {
                lines.push(format!(
                    "Reopened {} dead-lettered items; their batches' reports are rewritten when \
                     the replayed jobs finish.",
                    r.reopened
                ));
            }
            Ok(Done {
                title: format!("Replayed {s}"),
                lines,
                back: target.back(),
            })
        }
        (name, Target::Batch(b)) => {
            let control = DashboardError::from_control;
            let lines = match name {
                "retry" => {
                    let r = crate::batch_control::retry(cfg, b, None)
                        .await
                        .map_err(control)?;
                    vec![format!(
                        "{b}: retried {} items ({} failed items matched; {} not retriable)",
                        r.retried, r.matched, r.not_retriable
                    )]
                }
                "pause" => vec![
                    match crate::batch_control::pause(cfg, b).await.map_err(control)? {
                        Changed::Yes => {
                            format!("{b} paused; its jobs are parked until it is resumed")
                        }
                        Changed::Already => format!("{b} is paused already"),
                    },
                ],
                "resume" => {
                    let r = crate::batch_control::resume(cfg, b)
                        .await
                        .map_err(control)?;
                    vec![match r.changed {
                        Changed::Yes => format!(
                            "{b} resumed; {} parked jobs sent back to their queues",
                            r.sent_back
                        ),
                        Changed::Already => format!("{b} is not paused; nothing to resume"),
                    }]
                }
                "cancel" => {
                    let c = crate::batch_control::cancel(cfg, b)
                        .await
                        .map_err(control)?;
                    vec![match c.changed {
                        Changed::Yes => format!(
                            "{b} cancelled: {} items final as cancelled, {} waiting jobs dropped",
                            c.items_cancelled, c.jobs_dropped
                        ),
                        Changed::Already => format!("{b} was cancelled already"),
                    }]
                }
                _ => return Err(DashboardError::NotFound("no such action".into())),
            };
            tracing::info!(action = name, "dashboard batch action");
            Ok(Done {
                title: format!("{} {b}", spec.button),
                lines,
                back: target.back(),
            })
        }
        _ => Err(DashboardError::NotFound("no such action".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_validated_by_scope() {
        let replay = find("replay").unwrap_or_else(|| unreachable!());
        assert_eq!(
            Target::parse(replay, "clean").ok(),
            Some(Target::Stage(StageName::Clean))
        );
        assert!(Target::parse(replay, "nope").is_err());
        let batch = ActionSpec {
            name: "x",
            scope: Scope::Batch,
            button: "X",
            describe: "",
        };
        assert!(Target::parse(&batch, "../etc").is_err());
        assert!(Target::parse(&batch, "b-1").is_ok());
        assert!(find("nope").is_none());
        assert_eq!(of_scope(Scope::Stage).count(), 1);
        assert_eq!(of_scope(Scope::Batch).count(), 4);
        let cancel = find("cancel").unwrap_or_else(|| unreachable!());
        assert!(
            Target::parse(cancel, "clean").is_ok(),
            "a batch id, not a stage"
        );
        assert!(Target::parse(cancel, "a/b").is_err());
    }
}
