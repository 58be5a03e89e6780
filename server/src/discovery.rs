//! Who leads, for everyone who asks: the gRPC `Acquire`, `GET /server/acquire`,
//! the leader hints of API errors and the `NotLeader` messages sent to workers.
//! All of them read the published [`Role`](crate::role::Role), so they always agree.

use qron_proto::api::LeaderHint;
use qron_proto::worker::{AcquireResponse, Member};
use qron_raft_store::{NodeId, QronNode};

use crate::context::Context;
use crate::role::Role;

/// `id`'s HTTP address: ours from the config, a peer's as it told us.
pub fn http_addr(ctx: &Context, id: NodeId) -> Option<String> {
    if id == ctx.id {
        Some(ctx.http_addr().to_owned())
    } else {
        ctx.peers.http_addr(id)
    }
}

/// A leader hint for clients, with the HTTP address where known. `node` is the
/// leader's membership record if the caller has it; otherwise it is looked up.
pub fn hint(ctx: &Context, id: NodeId, node: Option<&QronNode>) -> Option<LeaderHint> {
    let grpc_addr = match node {
        Some(n) => n.grpc_addr.clone(),
        None => ctx
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)?
            .grpc_addr
            .clone(),
    };
    Some(LeaderHint {
        node_id: id,
        grpc_addr,
        http_addr: http_addr(ctx, id),
    })
}

/// The other node that leads, with its gRPC address, for a `NotLeader` message.
pub fn other_leader(ctx: &Context) -> Option<(NodeId, String)> {
    match ctx.role() {
        Role::Follower { leader, node } => Some((leader, node.grpc_addr)),
        _ => None,
    }
}

/// Who leads, the term, and every member with both addresses.
pub fn acquire(ctx: &Context) -> AcquireResponse {
    let (term, members): (u64, Vec<Member>) = {
        let m = ctx.raft.metrics().borrow().clone();
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                grpc_addr: n.grpc_addr.clone(),
                http_addr: http_addr(ctx, *id).unwrap_or_default(),
            })
            .collect();
        (m.current_term, members)
    };
    let mut r = AcquireResponse {
        term,
        members,
        ..AcquireResponse::default()
    };
    if let Some(id) = ctx.role().leader_id(ctx.id) {
        if let Some(member) = r.members.iter().find(|mm| mm.id == id) {
            r.has_leader = true;
            r.leader_id = id;
            r.leader_grpc = member.grpc_addr.clone();
            r.leader_http = member.http_addr.clone();
        }
    }
    r
}
