//! End-to-end tests of the simulated APIs over real HTTP on 127.0.0.1.
//! Every loop here is bounded so a regression fails instead of hanging.

mod auth;
mod deletes;
mod dest;
mod faults;
mod source;

use std::collections::HashSet;
use std::error::Error;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use simsaas::{
    BadBody, Deletion, DestFaults, LimitHeaders, Mutations, Rejection, SimAuth, SimConfig, SimSaas,
    SourceFaults,
};

type R = Result<(), Box<dyn Error>>;

const TOKEN: &str = "sim-token";
const MAX_PAGES: usize = 10_000;

fn client() -> Result<Client, reqwest::Error> {
    builder().timeout(Duration::from_secs(20)).build()
}

/// A client builder with the workspace's TLS cryptography (ring) installed:
/// reqwest is built without a provider of its own.
fn builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
}

async fn get(c: &Client, url: &str) -> Result<(StatusCode, Value), Box<dyn Error>> {
    let resp = c.get(url).bearer_auth(TOKEN).send().await?;
    let status = resp.status();
    Ok((status, resp.json().await?))
}

fn ids(data: &Value) -> Vec<String> {
    data.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

fn expected_ids(sim: &SimSaas) -> Vec<String> {
    sim.source_records().into_iter().map(|r| r.id).collect()
}

async fn wait_mutations(sim: &SimSaas, n: usize) -> R {
    for _ in 0..500 {
        if sim.mutations_done() >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("only {} of {n} mutations happened", sim.mutations_done()).into())
}

fn ties_config(seed: u64, records: usize) -> SimConfig {
    let mut cfg = SimConfig::new(seed, records);
    cfg.shared_timestamp_ratio = 0.3;
    cfg
}
