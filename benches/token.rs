//! Cost of verifying and minting a session token, each beside the raw work
//! it cannot avoid, verification with a ring of 1 key against one of
//! 10,000 keys, and a token found in the cache of verified tokens. Run
//! with `cargo bench --bench token`; BENCHMARKS.md has the figures and the
//! method.

use std::hint::black_box;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use sessiond::keys::{Key, KeyRing};
use sessiond::token::{TokenPolicy, mint_token, verify_cached, verify_token};

const KID: &str = "bench-key-1";
const ISSUED_AT: i64 = 1_800_000_000;
/// Keys in the large ring.
const LARGE_RING: usize = 10_000;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("valid timestamp")
}

/// Returns the policy the load benchmark runs with: issuer "ccstore", tokens
/// accepted for up to a day.
fn policy() -> TokenPolicy {
    TokenPolicy::new("ccstore".to_owned(), 86_400, 86_400, 30, 4096)
}

fn secret(seed: usize) -> Zeroizing<Vec<u8>> {
    Zeroizing::new((0..32).map(|i| (seed * 31 + i) as u8).collect())
}

fn key(kid: &str, seed: usize, sign_from: Option<DateTime<Utc>>) -> Key {
    let secret = secret(seed);
    Key::new(
        kid.to_owned(),
        Algorithm::HS256,
        secret,
        at(0),
        sign_from,
        None,
    )
}

/// Builds a ring with the signing bench key and `extra` verify-only keys.
fn ring(extra: usize) -> KeyRing {
    let mut keys = vec![key(KID, 0, Some(at(0)))];
    keys.extend((1..=extra).map(|i| key(&format!("key-{i:05}"), i, None)));
    KeyRing::new(keys).expect("unique kids")
}

/// Does the work no verifier can skip: base64url-decode the three segments and
/// compute one HMAC-SHA256 over the signing input, with the key already
/// prepared (the keyed state is cloned, as a key prepared at load time is).
fn raw_verify(token: &str, keyed: &Hmac<Sha256>) -> bool {
    let mut header = [0u8; 512];
    let mut claims = [0u8; 512];
    let mut tag = [0u8; 64];
    let signing_end = token.rfind('.').expect("three segments");
    let mut segments = token.split('.');
    let mut decode = |out: &mut [u8]| {
        let segment = segments.next().expect("segment");
        URL_SAFE_NO_PAD
            .decode_slice(segment, out)
            .expect("base64url")
    };
    black_box(decode(&mut header));
    black_box(decode(&mut claims));
    let tag_len = decode(&mut tag);

    let mut mac = keyed.clone();
    mac.update(&token.as_bytes()[..signing_end]);
    mac.verify_slice(&tag[..tag_len]).is_ok()
}

/// `token` with its header members in another order, signed again: a
/// header no key of the ring mints with, so verification parses it.
fn with_reordered_header(token: &str, keyed: &Hmac<Sha256>) -> String {
    let claims = token.split('.').nth(1).expect("claims segment");
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"typ":"JWT","kid":"{KID}","alg":"HS256"}}"#));
    let input = format!("{header}.{claims}");
    let mut mac = keyed.clone();
    mac.update(input.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{tag}")
}

/// Does the work no minter can skip: base64url-encode the header (already
/// prepared here) and claims JSON, one HMAC-SHA256 over the signing input,
/// and base64url-encode the tag. No randomness and no JSON formatting.
fn raw_mint(header_segment: &str, claims_json: &[u8], keyed: &Hmac<Sha256>) -> String {
    let mut token = String::with_capacity(256);
    token.push_str(header_segment);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims_json, &mut token);
    let mut mac = keyed.clone();
    mac.update(token.as_bytes());
    let tag = mac.finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut token);
    token
}

fn verify_benches(c: &mut Criterion) {
    let policy = policy();
    let small = ring(0);
    let large = ring(LARGE_RING - 1);
    let signer = small.signing_key(at(ISSUED_AT)).expect("bench key signs");
    let token = mint_token(signer, &policy, at(ISSUED_AT))
        .expect("mints")
        .token;
    let now = at(ISSUED_AT + 10);
    let keyed = Hmac::<Sha256>::new_from_slice(&secret(0)).expect("any key length");
    assert!(
        raw_verify(&token, &keyed),
        "raw baseline must accept the token"
    );
    assert!(verify_token(&token, &large, &policy, now).is_ok());
    let parsed = with_reordered_header(&token, &keyed);
    assert!(verify_token(&parsed, &small, &policy, now).is_ok());

    let mut group = c.benchmark_group("verify");
    group.bench_function("raw_decode_and_hmac", |b| {
        b.iter(|| raw_verify(black_box(&token), &keyed))
    });
    group.bench_function("verify_token_ring_1", |b| {
        b.iter(|| verify_token(black_box(&token), &small, &policy, now))
    });
    group.bench_function("verify_token_ring_10000", |b| {
        b.iter(|| verify_token(black_box(&token), &large, &policy, now))
    });
    group.bench_function("verify_token_parsed_header", |b| {
        b.iter(|| verify_token(black_box(&parsed), &small, &policy, now))
    });
    // The request path: the same token again, found in this thread's
    // cache of verified tokens.
    group.bench_function("verify_cached_hit", |b| {
        b.iter(|| verify_cached(black_box(token.as_bytes()), &small, &policy, now))
    });
    group.finish();
}

fn mint_benches(c: &mut Criterion) {
    let policy = policy();
    let ring = ring(0);
    let signer = ring.signing_key(at(ISSUED_AT)).expect("bench key signs");
    let keyed = Hmac::<Sha256>::new_from_slice(&secret(0)).expect("any key length");
    let sample = mint_token(signer, &policy, at(ISSUED_AT)).expect("mints");
    let mut segments = sample.token.split('.');
    let header_segment = segments.next().expect("header").to_owned();
    let claims_json = URL_SAFE_NO_PAD
        .decode(segments.next().expect("claims"))
        .expect("base64url");

    let mut group = c.benchmark_group("mint");
    group.bench_function("raw_encode_and_hmac", |b| {
        b.iter(|| raw_mint(&header_segment, black_box(&claims_json), &keyed))
    });
    // The contract reads every session id from the OS CSPRNG, so one
    // getrandom call is part of the work a mint cannot avoid.
    group.bench_function("raw_encode_hmac_and_os_random", |b| {
        b.iter(|| {
            let mut id = [0u8; 16];
            getrandom::fill(&mut id).expect("OS random");
            (
                id,
                raw_mint(&header_segment, black_box(&claims_json), &keyed),
            )
        })
    });
    group.bench_function("mint_token", |b| {
        b.iter(|| mint_token(signer, &policy, black_box(at(ISSUED_AT))))
    });
    group.bench_function("os_random_16_bytes", |b| {
        b.iter(|| {
            let mut id = [0u8; 16];
            getrandom::fill(&mut id).expect("OS random");
            id
        })
    });
    group.finish();
}

/// Measures the two HMAC checks side by side: jsonwebtoken's, which keys a new HMAC
/// and allocates on every call, and the key's prepared state.
fn hmac_benches(c: &mut Criterion) {
    let policy = policy();
    let ring = ring(0);
    let signer = ring.signing_key(at(ISSUED_AT)).expect("bench key signs");
    let token = mint_token(signer, &policy, at(ISSUED_AT))
        .expect("mints")
        .token;
    let (signing_input, signature) = token.rsplit_once('.').expect("three segments");
    let tag = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    let library_key = DecodingKey::from_secret(&secret(0));

    let mut group = c.benchmark_group("hmac");
    group.bench_function("jsonwebtoken_crypto_verify", |b| {
        b.iter(|| {
            jsonwebtoken::crypto::verify(
                black_box(signature),
                signing_input.as_bytes(),
                &library_key,
                Algorithm::HS256,
            )
        })
    });
    group.bench_function("keyed_mac_verify", |b| {
        b.iter(|| {
            signer
                .mac()
                .verify(black_box(signing_input.as_bytes()), &tag)
        })
    });
    group.finish();
}

criterion_group!(benches, verify_benches, mint_benches, hmac_benches);
criterion_main!(benches);
