//! `lazysnap kv-engine` and `lazysnap fusion-stats`: Fusion requests in kv_engine's current form,
//! answered by lazysnap-mountd as kv_engine answers them.

use anyhow::Context;
use clap::Args;
use lazysnap::control::Request;
use lazysnap::fusion::bodies::KvEngineRequest;
use lazysnap::fusion::stats::FusionStatsRequest;
use lazysnap::paths::Paths;

use crate::daemon;

#[derive(Args, Debug)]
pub struct KvEngineArgs {
    /// The opcode, by number (0x70 to 0x78) or name (GetFusionStorageSnapshot).
    opcode: String,
    /// The request's value: kv_engine's JSON body, inline or @FILE (0x73 and 0x76 take none).
    body: Option<String>,
    /// The bucket's log store URL.
    #[arg(long)]
    store: String,
    /// The bucket's UUID, for the opcodes that act on one vbucket (0x72 to 0x76).
    #[arg(long)]
    bucket: Option<String>,
    /// The header's vbucket (0x72 to 0x76).
    #[arg(long)]
    vbucket: Option<u16>,
    /// The kvstore's local folder, which 0x75 starts uploading.
    #[arg(long)]
    source: Option<String>,
}

pub fn kv_engine(args: KvEngineArgs, paths: &Paths) -> anyhow::Result<()> {
    let body = match args.body.as_deref() {
        None => None,
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file).with_context(|| format!("cannot read body {file}"))?,
                None => text.to_string(),
            };
            Some(serde_json::from_str(&text).with_context(|| format!("the body is not JSON: {text}"))?)
        }
    };
    let request = Request::KvEngine(KvEngineRequest {
        opcode: args.opcode,
        store: args.store,
        bucket: args.bucket,
        vbucket: args.vbucket,
        source: args.source,
        body,
    });
    daemon::print_request(paths, &request, true)
}

#[derive(Args, Debug)]
pub struct FusionStatsArgs {
    /// sync_info, active_guest_volumes, uploader, migration or is_mounted.
    group: String,
    /// A vbucket number, or `detail` for every vbucket (`vb_<id>`); none: all vbuckets as one
    /// value (active_guest_volumes only).
    target: Option<String>,
    /// The bucket's UUID: its vbuckets are the volumes kv/<bucket>/kvstore-<vb>.
    #[arg(long)]
    bucket: String,
    /// The bucket's log store (sync_info and uploader read it; detail lists its vbuckets).
    #[arg(long)]
    store: Option<String>,
}

pub fn fusion_stats(args: FusionStatsArgs, paths: &Paths) -> anyhow::Result<()> {
    let key = match args.target {
        Some(target) => format!("fusion {} {target}", args.group),
        None => format!("fusion {}", args.group),
    };
    let request = Request::FusionStats(FusionStatsRequest {
        key,
        bucket: args.bucket,
        store: args.store,
    });
    daemon::print_request(paths, &request, false)
}
