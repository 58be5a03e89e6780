//! `Command::Keyed`: a retried write returns its first answer instead of
//! acting twice (rule 13, docs/rules.md; the HTTP side is in docs/api.md).
//!
//! The first keyed command under a key is applied and its response, refusal
//! included, is recorded with the key and the digest of the request it came
//! from (`crate::idempotency`). A later keyed command under the same live key
//! changes nothing: it answers the recorded response if its request digest is
//! the same, and is refused with [`CommandError::KeyReused`] if it is not. This
//! holds however many entries with one key reach the log (a follower's retry
//! may race its first attempt), because the check happens here, in `apply`.
//! Expired records are pruned, in bounded amounts, only by a keyed command that
//! records a new key, never by one that changes nothing.

use super::State;
use crate::command::{Command, CommandError, Reply};
use crate::idempotency::{validate_key, KeyRecord, KEY_TTL_MS, MAX_DIGEST_LEN, PRUNE_PER_APPLY};

impl State {
    pub(super) fn keyed(
        &mut self,
        key: &str,
        request_digest: &str,
        now_ms: i64,
        command: &Command,
    ) -> Result<Reply, CommandError> {
        validate_key(key).map_err(CommandError::Invalid)?;
        if request_digest.len() > MAX_DIGEST_LEN {
            return Err(CommandError::Invalid(format!(
                "a request digest is at most {MAX_DIGEST_LEN} bytes"
            )));
        }
        if matches!(command, Command::Keyed { .. }) {
            // One key per request: a key inside a key has no meaning to give it.
            return Err(CommandError::Invalid("keyed commands cannot nest".into()));
        }
        if let Some(first) = self.key_record(key).filter(|r| now_ms < r.expires_at_ms) {
            if first.request_digest != request_digest {
                return Err(CommandError::KeyReused(format!(
                    "Idempotency-Key {key:?} was already used for a different request (another route or \
                     body) within the last {} hours; use a new key for a new request",
                    KEY_TTL_MS / 3_600_000
                )));
            }
            return first.response.clone();
        }
        self.prune_keys(now_ms, PRUNE_PER_APPLY);
        let response = self.apply_inner(command);
        self.put_key_record(
            key,
            &KeyRecord {
                request_digest: request_digest.to_owned(),
                expires_at_ms: now_ms.saturating_add(KEY_TTL_MS),
                response: response.clone(),
            },
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::MAX_KEY_LEN;

    fn create_app(name: &str, now_ms: i64) -> Command {
        Command::CreateApp {
            name: name.into(),
            secret: "s".into(),
            now_ms,
        }
    }

    fn keyed(key: &str, digest: &str, now_ms: i64, command: Command) -> Command {
        Command::Keyed {
            key: key.into(),
            request_digest: digest.into(),
            now_ms,
            command: Box::new(command),
        }
    }

    #[test]
    fn keys_are_printable_ascii_of_1_to_128_bytes() {
        assert!(validate_key("a").is_ok());
        assert!(validate_key(&"~".repeat(MAX_KEY_LEN)).is_ok());
        assert!(validate_key("with space and !\"#").is_ok());
        for bad in ["", "tab\there", "é", "nl\n", "\u{7f}"] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        let long = validate_key(&"k".repeat(MAX_KEY_LEN + 1)).expect_err("too long");
        assert!(long.contains("1 to 128 bytes"), "{long}");
    }

    #[test]
    fn a_second_command_with_the_key_answers_the_first_reply_and_changes_nothing() {
        let mut s = State::default();
        let first = s.apply(&keyed("k1", "d", 1_000, create_app("a", 1_000)));
        assert_eq!(first.0, Ok(Reply::AppCreated { name: "a".into() }));
        let after_first = s.clone();
        // A retry proposed later by another node: other now_ms, same request.
        let again = s.apply(&keyed("k1", "d", 5_000, create_app("a", 5_000)));
        assert_eq!(again, first, "the first answer, not a 409");
        assert_eq!(s, after_first, "a duplicate changes nothing");
        assert_eq!(s.app("a").expect("app").created_at_ms, 1_000);
        // Without the key, the same create is the conflict it always was.
        let bare = s.apply(&create_app("a", 6_000));
        assert!(matches!(bare.0, Err(CommandError::AlreadyExists(_))), "{bare:?}");
    }

    #[test]
    fn a_refusal_is_recorded_and_answered_again_even_if_the_state_changed() {
        let mut s = State::default();
        let job: qron_proto::api::JobSpec = serde_json::from_str(
            r#"{"app":"a","name":"j","schedule":{"type":"api"},"processor":{"type":"shell","script":"true"}}"#,
        )
        .expect("spec");
        let create = |now| {
            keyed(
                "k",
                "d",
                now,
                Command::CreateJob {
                    spec: job.clone(),
                    now_ms: now,
                },
            )
        };
        let first = s.apply(&create(1_000));
        assert!(
            matches!(first.0, Err(CommandError::NotFound(_))),
            "no app yet: {first:?}"
        );
        s.apply(&create_app("a", 1_500));
        assert_eq!(s.apply(&create(2_000)), first, "the retry answers the first answer");
        assert!(s.job(crate::types::JobId(1)).is_err(), "and does not create the job");
    }

    #[test]
    fn the_same_key_for_another_request_is_refused_and_changes_nothing() {
        let mut s = State::default();
        s.apply(&keyed("k", "run-job-1", 1_000, create_app("a", 1_000)));
        let before = s.clone();
        let other = s.apply(&keyed("k", "create-app-b", 2_000, create_app("b", 2_000)));
        let Err(CommandError::KeyReused(msg)) = other.0 else {
            panic!("expected KeyReused, got {other:?}");
        };
        assert!(msg.contains("different request") && msg.contains("\"k\""), "{msg}");
        assert_eq!(s, before);
    }

    #[test]
    fn an_expired_key_is_free_again() {
        let mut s = State::default();
        s.apply(&keyed("k", "d", 0, create_app("a", 0)));
        // One millisecond before expiry: still a duplicate.
        let dup = s.apply(&keyed("k", "d2", KEY_TTL_MS - 1, create_app("b", 0)));
        assert!(matches!(dup.0, Err(CommandError::KeyReused(_))), "{dup:?}");
        // At expiry the key is new: the command runs and is recorded afresh.
        let fresh = s.apply(&keyed("k", "d2", KEY_TTL_MS, create_app("b", KEY_TTL_MS)));
        assert_eq!(fresh.0, Ok(Reply::AppCreated { name: "b".into() }));
        let rec = s
            .key_record("k")
            .filter(|r| KEY_TTL_MS < r.expires_at_ms)
            .expect("recorded");
        assert_eq!(rec.request_digest, "d2");
        assert_eq!(rec.expires_at_ms, 2 * KEY_TTL_MS);
        assert_eq!(s.key_count(), 1, "the old record was replaced, not kept beside");
        assert_eq!(s.key_expiry_count(), 1);
    }

    #[test]
    fn expired_records_are_pruned_in_bounded_amounts_by_recording_commands_only() {
        let mut s = State::default();
        let n = PRUNE_PER_APPLY * 2 + 5;
        for i in 0..n {
            s.apply(&keyed(&format!("old{i}"), "d", i as i64, create_app("a", 0)));
        }
        assert_eq!(s.key_count(), n);
        let late = KEY_TTL_MS + n as i64;
        // A duplicate of a live key changes nothing, pruning included.
        s.apply(&keyed("new0", "d", late, create_app("a", 0)));
        assert_eq!(s.key_count(), n - PRUNE_PER_APPLY + 1);
        let before = s.clone();
        s.apply(&keyed("new0", "d", late, create_app("a", 0)));
        assert_eq!(s, before);
        // Each recording command prunes at most PRUNE_PER_APPLY.
        s.apply(&keyed("new1", "d", late, create_app("a", 0)));
        assert_eq!(s.key_count(), n - 2 * PRUNE_PER_APPLY + 2);
        s.apply(&keyed("new2", "d", late, create_app("a", 0)));
        assert_eq!(s.key_count(), 3, "only the three live keys are left");
        assert_eq!(s.key_expiry_count(), 3);
        assert!(s.key_record("old0").filter(|r| late < r.expires_at_ms).is_none());
    }

    #[test]
    fn bad_keys_and_nesting_are_refused_and_change_nothing() {
        let mut s = State::default();
        for c in [
            keyed("", "d", 0, create_app("a", 0)),
            keyed(&"k".repeat(129), "d", 0, create_app("a", 0)),
            keyed("k", &"d".repeat(129), 0, create_app("a", 0)),
            keyed("k", "d", 0, keyed("k2", "d", 0, create_app("a", 0))),
        ] {
            let r = s.apply(&c);
            assert!(matches!(r.0, Err(CommandError::Invalid(_))), "{r:?}");
            assert_eq!(s, State::default());
        }
    }

    #[test]
    fn a_keyed_command_inside_a_batch_is_deduplicated_too() {
        let mut s = State::default();
        let run = |now| keyed("k", "d", now, create_app("a", now));
        let r = s.apply(&Command::Batch {
            commands: vec![run(1), run(2)],
        });
        let Ok(Reply::Batch(replies)) = r.0 else {
            panic!("{r:?}");
        };
        assert_eq!(replies[0], replies[1]);
        assert_eq!(replies[0], Ok(Reply::AppCreated { name: "a".into() }));
    }
}
