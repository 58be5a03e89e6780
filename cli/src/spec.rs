//! The [`JobSpec`] that `job create` and `job update` send: read from a JSON
//! file (or stdin), or built from flags.
//!
//! Flags become a JSON object that is then deserialized exactly as a file
//! would be, so every default (concurrency 1, enabled, UTC, ...) comes from one
//! place, `qron_proto::api`. This module only checks that the flags make sense
//! together; whether the values are valid (is the cron expression right? does
//! the app exist?) is the server's call, so the rules live in one place.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use qron_proto::api::JobSpec;
use serde_json::{Map, Value};

use crate::args::JobFlags;

/// Fields of a job as the API shows it (`JobView`) that are not settings. They
/// are dropped from a file so that `job get -o json` output can be edited and
/// fed back; every other unknown field is still refused.
const VIEW_ONLY_FIELDS: [&str; 4] = ["id", "created_at_ms", "updated_at_ms", "last_fire_ms"];

/// Reads a job from `path` (`-` = stdin). `job_id`: the job being updated, if any.
pub fn from_file(path: &Path, job_id: Option<u64>) -> Result<JobSpec> {
    let (text, origin) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the job from stdin")?;
        (text, "stdin".to_owned())
    } else {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the job from {}", path.display()))?;
        (text, path.display().to_string())
    };
    parse(&text, job_id).with_context(|| format!("the job in {origin} is not valid"))
}

/// Parses a job given as JSON: a `JobSpec`, or a job as `job get -o json`
/// prints it. If it carries an `id`, that must be `job_id` (when updating).
pub fn parse(text: &str, job_id: Option<u64>) -> Result<JobSpec> {
    // A plain spec first: serde's message then points at the line and column.
    let plain_error = match serde_json::from_str::<JobSpec>(text) {
        Ok(spec) => return Ok(spec),
        Err(e) => e,
    };
    let Ok(Value::Object(mut job)) = serde_json::from_str::<Value>(text) else {
        return Err(plain_error.into());
    };
    if !VIEW_ONLY_FIELDS.iter().any(|f| job.contains_key(*f)) {
        return Err(plain_error.into());
    }
    if let Some(id) = job.get("id") {
        match (id.as_u64(), job_id) {
            (Some(found), Some(wanted)) if found != wanted => {
                bail!("it describes job {found}, not job {wanted}; fix its `id` or remove it")
            }
            (Some(_), _) => {}
            (None, _) => bail!("its `id` must be a job id, not {id}"),
        }
    }
    for field in VIEW_ONLY_FIELDS {
        job.remove(field);
    }
    Ok(serde_json::from_value(Value::Object(job))?)
}

/// The job flags that were given, by name. None may be combined with `--file`.
pub fn given_flags(f: &JobFlags) -> Vec<&'static str> {
    [
        ("--app", f.app.is_some()),
        ("--name", f.name.is_some()),
        ("--description", f.description.is_some()),
        ("--cron", f.cron.is_some()),
        ("--time-zone", f.time_zone.is_some()),
        ("--fixed-rate-ms", f.fixed_rate_ms.is_some()),
        ("--fixed-delay-ms", f.fixed_delay_ms.is_some()),
        ("--api", f.api),
        ("--shell", f.shell.is_some()),
        ("--http-url", f.http_url.is_some()),
        ("--http-method", f.http_method.is_some()),
        ("--custom", f.custom.is_some()),
        ("--params", f.params.is_some()),
        ("--max-instances", f.max_instances.is_some()),
        ("--instance-timeout-ms", f.instance_timeout_ms.is_some()),
        ("--instance-retries", f.instance_retries.is_some()),
        ("--disabled", f.disabled),
        ("--retention-max-age-ms", f.retention_max_age_ms.is_some()),
        ("--retention-max-count", f.retention_max_count.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect()
}

/// Builds a job from flags: `--app`, `--name`, at most one schedule (`--api`
/// if none) and exactly one processor.
pub fn from_flags(f: &JobFlags) -> Result<JobSpec> {
    let mut job = Map::new();
    job.insert("app".to_owned(), required(&f.app, "--app")?.into());
    job.insert("name".to_owned(), required(&f.name, "--name")?.into());
    job.insert("schedule".to_owned(), schedule(f)?);
    job.insert("processor".to_owned(), processor(f)?);
    if let Some(description) = &f.description {
        job.insert("description".to_owned(), description.as_str().into());
    }
    if let Some(params) = &f.params {
        job.insert("params".to_owned(), params.as_str().into());
    }
    if let Some(n) = f.max_instances {
        job.insert("max_instances".to_owned(), n.into());
    }
    if let Some(ms) = f.instance_timeout_ms {
        job.insert("instance_timeout_ms".to_owned(), ms.into());
    }
    if let Some(n) = f.instance_retries {
        job.insert("instance_retries".to_owned(), n.into());
    }
    if f.disabled {
        job.insert("enabled".to_owned(), false.into());
    }
    if f.retention_max_age_ms.is_some() || f.retention_max_count.is_some() {
        let mut r = Map::new();
        if let Some(ms) = f.retention_max_age_ms {
            r.insert("max_age_ms".to_owned(), ms.into());
        }
        if let Some(n) = f.retention_max_count {
            r.insert("max_count".to_owned(), n.into());
        }
        job.insert("retention".to_owned(), Value::Object(r));
    }
    serde_json::from_value(Value::Object(job)).context("the flags do not describe a valid job")
}

fn required<'a>(value: &'a Option<String>, flag: &str) -> Result<&'a str> {
    value
        .as_deref()
        .with_context(|| format!("{flag} is required (or give the whole job with --file)"))
}

/// A JSON object from `(field, value)` pairs.
fn object<'a>(fields: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// Names of the flags of `candidates` that were given.
fn chosen(candidates: &[(&'static str, bool)]) -> Vec<&'static str> {
    candidates
        .iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| *flag)
        .collect()
}

fn schedule(f: &JobFlags) -> Result<Value> {
    let given = chosen(&[
        ("--cron", f.cron.is_some()),
        ("--fixed-rate-ms", f.fixed_rate_ms.is_some()),
        ("--fixed-delay-ms", f.fixed_delay_ms.is_some()),
        ("--api", f.api),
    ]);
    if given.len() > 1 {
        bail!("a job has one schedule; choose one of {}", given.join(", "));
    }
    if f.time_zone.is_some() && f.cron.is_none() {
        bail!("--time-zone only applies to a --cron schedule");
    }
    Ok(if let Some(expression) = &f.cron {
        let mut fields = vec![
            ("type", Value::from("cron")),
            ("expression", expression.as_str().into()),
        ];
        if let Some(tz) = &f.time_zone {
            fields.push(("time_zone", tz.as_str().into()));
        }
        object(fields)
    } else if let Some(ms) = f.fixed_rate_ms {
        object([("type", Value::from("fixed_rate")), ("interval_ms", ms.into())])
    } else if let Some(ms) = f.fixed_delay_ms {
        object([("type", Value::from("fixed_delay")), ("delay_ms", ms.into())])
    } else {
        object([("type", Value::from("api"))])
    })
}

fn processor(f: &JobFlags) -> Result<Value> {
    let given = chosen(&[
        ("--shell", f.shell.is_some()),
        ("--http-url", f.http_url.is_some()),
        ("--custom", f.custom.is_some()),
    ]);
    if given.len() > 1 {
        bail!("a job has one processor; choose one of {}", given.join(", "));
    }
    if f.http_method.is_some() && f.http_url.is_none() {
        bail!("--http-method only applies to an --http-url processor");
    }
    Ok(if let Some(script) = &f.shell {
        object([("type", Value::from("shell")), ("script", script.as_str().into())])
    } else if let Some(url) = &f.http_url {
        let mut fields = vec![("type", Value::from("http")), ("url", url.as_str().into())];
        if let Some(method) = &f.http_method {
            fields.push(("method", method.as_str().into()));
        }
        object(fields)
    } else if let Some(name) = &f.custom {
        object([("type", Value::from("custom")), ("name", name.as_str().into())])
    } else {
        bail!(
            "a job needs a processor: give --shell SCRIPT, --http-url URL or --custom NAME \
             (or the whole job with --file)"
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use qron_proto::api::{Processor, Schedule};

    use super::*;
    use crate::args::{Cli, Command, JobCommand, JobCreateArgs};

    /// `qronctl job create <args>` as the user would type it.
    fn create_args(args: &[&str]) -> JobCreateArgs {
        let argv = ["qronctl", "job", "create"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).expect("the command line parses").command {
            Command::Job(JobCommand::Create(create)) => create,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn spec_from(args: &[&str]) -> Result<JobSpec> {
        from_flags(&create_args(args).flags)
    }

    #[test]
    fn cron_with_time_zone_and_shell() {
        let spec = spec_from(&[
            "--app",
            "billing",
            "--name",
            "nightly",
            "--cron",
            "0 0 2 * * *",
            "--time-zone",
            "Europe/Paris",
            "--shell",
            "./run.sh --all",
        ])
        .expect("valid job");
        assert_eq!(spec.app, "billing");
        assert_eq!(spec.name, "nightly");
        assert_eq!(
            spec.schedule,
            Schedule::Cron {
                expression: "0 0 2 * * *".to_owned(),
                time_zone: "Europe/Paris".to_owned(),
            }
        );
        assert_eq!(
            spec.processor,
            Processor::Shell {
                script: "./run.sh --all".to_owned()
            }
        );
        // Defaults come from the API types.
        assert!(spec.enabled);
        assert_eq!(spec.concurrency, 1);
        assert_eq!(spec.max_instances, 0);
    }

    #[test]
    fn cron_without_time_zone_is_utc() {
        let spec =
            spec_from(&["--app", "a", "--name", "n", "--cron", "*/5 * * * * *", "--custom", "p"]).expect("valid job");
        assert_eq!(
            spec.schedule,
            Schedule::Cron {
                expression: "*/5 * * * * *".to_owned(),
                time_zone: "UTC".to_owned(),
            }
        );
        assert_eq!(spec.processor, Processor::Custom { name: "p".to_owned() });
    }

    #[test]
    fn fixed_rate_http_and_the_other_settings() {
        let spec = spec_from(&[
            "--app",
            "a",
            "--name",
            "ping",
            "--fixed-rate-ms",
            "60000",
            "--http-url",
            "http://svc/health",
            "--http-method",
            "POST",
            "--params",
            "-v",
            "--max-instances",
            "2",
            "--instance-timeout-ms",
            "5000",
            "--instance-retries",
            "3",
            "--disabled",
            "--description",
            "health check",
        ])
        .expect("valid job");
        assert_eq!(
            spec.schedule,
            Schedule::FixedRate {
                interval_ms: 60_000,
                start_at_ms: None,
            }
        );
        match &spec.processor {
            Processor::Http {
                method,
                url,
                expected_status,
                ..
            } => {
                assert_eq!(method, "POST");
                assert_eq!(url, "http://svc/health");
                assert_eq!(*expected_status, 200);
            }
            other => panic!("processor {other:?}"),
        }
        assert_eq!(spec.params, "-v");
        assert_eq!(spec.max_instances, 2);
        assert_eq!(spec.instance_timeout_ms, 5000);
        assert_eq!(spec.instance_retries, 3);
        assert!(!spec.enabled);
        assert_eq!(spec.description, "health check");
    }

    #[test]
    fn no_schedule_means_api_and_fixed_delay_is_understood() {
        let spec = spec_from(&["--app", "a", "--name", "n", "--shell", "true"]).expect("valid job");
        assert_eq!(spec.schedule, Schedule::Api);
        let spec =
            spec_from(&["--app", "a", "--name", "n", "--fixed-delay-ms", "10", "--shell", "true"]).expect("valid job");
        assert_eq!(spec.schedule, Schedule::FixedDelay { delay_ms: 10 });
    }

    #[test]
    fn missing_processor_is_explained() {
        let err = spec_from(&["--app", "a", "--name", "n", "--cron", "* * * * * *"]).expect_err("no processor");
        let text = format!("{err:#}");
        assert!(text.contains("a job needs a processor"), "{text}");
        assert!(
            text.contains("--shell") && text.contains("--http-url") && text.contains("--custom"),
            "{text}"
        );
    }

    #[test]
    fn missing_app_or_name_is_explained() {
        let err = spec_from(&["--name", "n", "--shell", "true"]).expect_err("no app");
        assert!(format!("{err:#}").contains("--app is required"), "{err:#}");
        let err = spec_from(&["--app", "a", "--shell", "true"]).expect_err("no name");
        assert!(format!("{err:#}").contains("--name is required"), "{err:#}");
    }

    #[test]
    fn clashing_flags_are_named() {
        let err =
            spec_from(&["--app", "a", "--name", "n", "--shell", "true", "--custom", "x"]).expect_err("two processors");
        assert!(format!("{err:#}").contains("--shell, --custom"), "{err:#}");
        let err = spec_from(&[
            "--app",
            "a",
            "--name",
            "n",
            "--api",
            "--fixed-rate-ms",
            "5",
            "--shell",
            "x",
        ])
        .expect_err("two schedules");
        assert!(format!("{err:#}").contains("--fixed-rate-ms, --api"), "{err:#}");
        let err = spec_from(&["--app", "a", "--name", "n", "--time-zone", "UTC", "--shell", "x"])
            .expect_err("time zone without cron");
        assert!(format!("{err:#}").contains("--time-zone"), "{err:#}");
        let err = spec_from(&["--app", "a", "--name", "n", "--shell", "x", "--http-method", "PUT"])
            .expect_err("method without url");
        assert!(format!("{err:#}").contains("--http-method"), "{err:#}");
    }

    #[test]
    fn given_flags_lists_what_clashes_with_file() {
        let args = create_args(&["--file", "job.json", "--app", "a", "--disabled"]);
        assert_eq!(args.file.as_deref(), Some(Path::new("job.json")));
        assert_eq!(given_flags(&args.flags), vec!["--app", "--disabled"]);
        assert!(given_flags(&create_args(&["--file", "-"]).flags).is_empty());
    }

    const SPEC: &str = r#"{"app":"a","name":"n","schedule":{"type":"api"},
        "processor":{"type":"shell","script":"true"}}"#;

    #[test]
    fn a_plain_spec_parses_and_a_typo_is_refused() {
        let spec = parse(SPEC, None).expect("valid");
        assert_eq!(spec.name, "n");
        let err = parse(&SPEC.replace("schedule", "shedule"), None).expect_err("typo");
        assert!(err.to_string().contains("shedule"), "{err}");
    }

    #[test]
    fn a_job_as_shown_by_get_is_accepted() {
        let view = r#"{"id":7,"app":"a","name":"n","schedule":{"type":"api"},
            "processor":{"type":"shell","script":"true"},
            "created_at_ms":1,"updated_at_ms":2,"last_fire_ms":null}"#;
        assert_eq!(parse(view, Some(7)).expect("valid"), parse(SPEC, None).expect("valid"));
        let err = parse(view, Some(8)).expect_err("another job");
        assert!(err.to_string().contains("job 7, not job 8"), "{err}");
        // Dropping the view's fields does not let other unknown fields through.
        let err = parse(&view.replace("\"name\"", "\"nmae\""), Some(7)).expect_err("typo");
        assert!(err.to_string().contains("nmae"), "{err}");
    }
}
