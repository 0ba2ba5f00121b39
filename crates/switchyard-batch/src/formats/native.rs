//! Native lines: Switchyard job records, as on the jobs topic. The job's own
//! `job_id` becomes its `custom_id`; its project must be the batch's. Output: one
//! result record per line, with the caller's `job_id` restored.

use switchyard_core::job::Job;
use switchyard_core::result::JobResult;

use super::{Destination, LineError, LineSettings, META_CUSTOM_ID, ParsedLine, from_line};

/// Parses one job line.
pub(crate) fn parse(line: &[u8], settings: &LineSettings) -> Result<ParsedLine, LineError> {
    let mut job: Job = from_line(line)?;
    let custom_id = job.job_id.clone();
    if let Err(e) = job.validate() {
        return Err(LineError::new(e.to_string()).with_id(&custom_id));
    }
    if job.project != settings.project {
        return Err(LineError::new(format!(
            "project `{}` is not the batch's project `{}`; a batch belongs to one project",
            job.project, settings.project
        ))
        .with_id(&custom_id));
    }
    // A pin that is not a catalog model is dropped, as for the other formats.
    job.model = job
        .model
        .as_deref()
        .and_then(|m| settings.pins.resolve(m))
        .map(str::to_owned);
    job.batch_id = None;
    job.metadata
        .insert(META_CUSTOM_ID.to_owned(), custom_id.clone());
    Ok(ParsedLine { custom_id, job })
}

/// Renders one result as a result record with the caller's job id.
pub(crate) fn render(result: &JobResult, custom_id: &str, out: &mut Vec<u8>) -> Destination {
    let mut r = result.clone();
    r.job_id = custom_id.to_owned();
    // Serializing a result into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &r);
    Destination::Output
}
