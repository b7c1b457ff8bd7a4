//! Signatures per second with the CA key in SoftHSM2: a pool of 1 session against a pool of 4,
//! four threads signing at once (as the service's blocking pool would), and one thread alone
//! for the latency of a call. `cargo bench -p oxroot-hsm`; criterion's `thrpt` is signatures/s.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` at `C_Initialize`, once per process: the bench makes a
//! throwaway token in a temporary directory and starts itself again with that configuration.

#![allow(clippy::expect_used, reason = "a bench fails loudly")]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use oxroot_hsm::{CaKey, Pkcs11Uri, Token};
use sha2::Digest as _;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const DIR_ENV: &str = "OXROOT_HSM_BENCH_DIR";
const THREADS: u64 = 4;
/// About the size of a device certificate's TBSCertificate.
const MESSAGE: [u8; 600] = [0x5a; 600];

fn main() {
    let Some(dir) = std::env::var_os(DIR_ENV).map(PathBuf::from) else {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("softhsm2.conf");
        std::fs::create_dir(tmp.path().join("tokens")).unwrap();
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tmp.path().join("tokens").display()
            ),
        )
        .unwrap();
        let init = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", "bench"])
            .args(["--so-pin", "bench-so-pin", "--pin", "bench-pin"])
            .output()
            .expect("softhsm2-util (Debian package softhsm2) must be installed");
        assert!(init.status.success(), "{init:?}");
        std::fs::write(tmp.path().join("pin"), "bench-pin\n").unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("SOFTHSM2_CONF", &conf)
            .env(DIR_ENV, tmp.path())
            .status()
            .unwrap();
        drop(tmp);
        std::process::exit(status.code().unwrap_or(1));
    };
    let uri: Pkcs11Uri = format!(
        "pkcs11:token=bench?module-path={MODULE}&pin-source=file:{}",
        dir.join("pin").display()
    )
    .parse()
    .unwrap();

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    signing(&mut c, &uri);
    c.final_summary();
}

/// `iters` signatures spread over [`THREADS`] threads; the time they took.
fn concurrent(key: &CaKey, iters: u64) -> Duration {
    let per_thread = iters.div_ceil(THREADS);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..per_thread {
                    std::hint::black_box(key.sign_sha256(&MESSAGE).unwrap());
                }
            });
        }
    });
    started
        .elapsed()
        .mul_f64(iters as f64 / (per_thread * THREADS) as f64)
}

fn signing(c: &mut Criterion, uri: &Pkcs11Uri) {
    let mut group = c.benchmark_group("sign_sha256 on SoftHSM2");
    group.throughput(Throughput::Elements(1));
    for pool_size in [1usize, 4] {
        let token: Arc<Token> = Token::open(uri, pool_size).unwrap();
        let key = token
            .generate_key(&format!("bench-pool-{pool_size}"), &[pool_size as u8])
            .unwrap();
        group.bench_with_input(
            BenchmarkId::new(format!("{THREADS} threads, pool"), pool_size),
            &key,
            |b, key| b.iter_custom(|iters| concurrent(key, iters)),
        );
        if pool_size == 1 {
            group.bench_with_input(BenchmarkId::new("1 thread, pool", 1), &key, |b, key| {
                b.iter(|| key.sign_sha256(&MESSAGE).unwrap());
            });
        }
        println!("pool of {pool_size}: {:?}", token.stats());
    }

    // The floor: the same signature through cryptoki on one session of the bench's own, no
    // pool, no checks (what the crate adds is the difference with "1 thread, pool 1").
    let ctx = Pkcs11::new(MODULE).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx.get_slots_with_token().unwrap()[0];
    let session = ctx.open_rw_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&AuthPin::from("bench-pin")));
    let handle = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"bench-pool-1".to_vec()),
        ])
        .unwrap()[0];
    group.bench_function("raw cryptoki, 1 thread, 1 session", |b| {
        b.iter(|| {
            let digest = sha2::Sha256::digest(MESSAGE);
            session.sign(&Mechanism::Ecdsa, handle, &digest).unwrap()
        });
    });
    group.finish();
}
