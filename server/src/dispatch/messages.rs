//! The messages the leader sends down a worker's stream, built in one place:
//! `Dispatch` (run an attempt), `Stop` (stop one) and `NotLeader` (go elsewhere).

use qron_proto::api::JobSpec;
use qron_proto::worker::{server_message, Dispatch, LeaderId, NotLeader, Refused, RefusedCode, ServerMessage, Stop};
use qron_raft_store::{Attempt, Instance, InstanceId};

/// Wraps one message for the stream.
pub fn msg(m: server_message::Msg) -> ServerMessage {
    ServerMessage { msg: Some(m) }
}

/// The Dispatch message for an instance's current attempt. A scheduled instance
/// whose fire time is after `now_ms` starts at that time, by the worker's clock.
pub fn dispatch(inst: &Instance, job: &JobSpec, leader: &LeaderId, now_ms: i64) -> ServerMessage {
    let start_at_ms = inst.fire_time_ms.filter(|t| *t > now_ms).unwrap_or(0);
    msg(server_message::Msg::Dispatch(Dispatch {
        instance_id: inst.id.0,
        attempt: inst.attempt.0,
        leader: Some(*leader),
        job_id: inst.job_id.0,
        job_name: job.name.clone(),
        processor_json: serde_json::to_string(&job.processor).unwrap_or_default(),
        job_params: job.params.clone(),
        instance_params: inst.params.clone(),
        start_at_ms,
        timeout_ms: job.instance_timeout_ms,
        incarnation: inst.worker_incarnation.clone().unwrap_or_default(),
    }))
}

/// The Stop message for an instance's current attempt.
pub fn stop(inst: &Instance, leader: &LeaderId, reason: &str) -> ServerMessage {
    stop_attempt(inst.id, inst.attempt, leader, reason)
}

/// The Stop message for one attempt.
pub fn stop_attempt(instance: InstanceId, attempt: Attempt, leader: &LeaderId, reason: &str) -> ServerMessage {
    msg(server_message::Msg::Stop(Stop {
        instance_id: instance.0,
        attempt: attempt.0,
        leader: Some(*leader),
        reason: reason.to_owned(),
    }))
}

/// The refusal of a registration: `code` tells the worker whether to retry.
pub fn refused(code: RefusedCode, reason: String) -> ServerMessage {
    msg(server_message::Msg::Refused(Refused {
        reason,
        code: code as i32,
    }))
}

/// A NotLeader message naming `leader` (id, gRPC address) if known.
pub fn not_leader(leader: Option<(u64, String)>) -> ServerMessage {
    let m = match leader {
        Some((id, grpc)) => NotLeader {
            has_leader: true,
            leader_id: id,
            leader_grpc: grpc,
        },
        None => NotLeader::default(),
    };
    msg(server_message::Msg::NotLeader(m))
}
