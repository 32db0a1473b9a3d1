//! The closing step of every command that writes a profile (`profile`, locally and in the
//! cluster, `fetch`, `convert`): record what is known about the run, write the profile, say so
//! on one line, push it to the `--push` receivers, and turn a partial result or a failed push
//! into its exit code. The summary and the checks on
//! what was written follow in [`crate::gate::Gate::after_write`].

use crate::error::{CliError, Exit};
use crate::format::Format;
use crate::output::{Destination, Labels, Stacks};
use crate::push;
use crate::run_info::RunInfo;

/// A merged profile, ready to be written.
pub struct Profile<'a> {
    pub stacks: Stacks<'a>,
    pub labels: Labels,
    /// What the run was; fields left `None` keep what the destination knew before.
    pub run: RunInfo,
    /// Some nodes failed or the run was stopped early: exit 7. `None` for files, which do not
    /// say.
    pub partial: Option<bool>,
    /// The end of the `wrote` line after the stack count: `, 1.2s) PARTIAL`.
    pub tail: String,
}

/// Writes `profile` to `destination`; the exit code says whether it is partial.
pub fn write(destination: &Destination, profile: Profile) -> Result<Exit, CliError> {
    destination.record_run(profile.run);
    destination.write(profile.stacks, &profile.labels)?;
    eprintln!(
        "wrote {} ({}, {} stacks{}",
        destination.describe(),
        crate::output::amount(profile.stacks.total(), destination.run().unit()),
        profile.stacks.len(),
        profile.tail
    );
    if let (Some(partial), None) = (profile.partial, destination.run().partial) {
        destination.record_run(RunInfo { partial: Some(partial), ..Default::default() });
    }
    let pushed = push_to_receivers(destination, profile.stacks, &profile.labels);
    Ok(if !pushed {
        Exit::PushFailed
    } else if profile.partial == Some(true) {
        Exit::Partial
    } else {
        Exit::Ok
    })
}

/// Pushes what was written to every `--push` receiver, one line each; false if any failed.
fn push_to_receivers(destination: &Destination, stacks: Stacks, labels: &Labels) -> bool {
    let plan = destination.push();
    if plan.is_empty() {
        return true;
    }
    let mut all = true;
    for pushed in push::deliver(plan, &stacks.folded(), labels, &destination.run()) {
        let receiver = pushed.receiver.name();
        match pushed.outcome {
            Ok(what) => eprintln!("pushed {what} to {receiver} {}", pushed.url),
            Err(why) => {
                all = false;
                // Folded and pprof files can be read back and pushed again; the other formats not.
                let again = match (&destination.path, destination.format) {
                    (Some(path), Format::Folded | Format::Pprof) => {
                        let file = path.display();
                        format!("; `kubectl eagle convert {file} -o {file} --push {receiver} URL` pushes it again")
                    }
                    _ => String::new(),
                };
                eprintln!(
                    "kubectl-eagle: error: could not push the profile to {receiver} {}: {why}; the profile is in {}{again}",
                    pushed.url,
                    destination.describe(),
                );
            }
        }
    }
    all
}
