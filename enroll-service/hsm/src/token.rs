//! A loaded module (one per library path in the process), a token on it and its pool of
//! logged-in sessions, and the recovery when the token goes away.
//!
//! Locking order, always: a module's `life` lock, then a token's pool lock. A thread never asks
//! for the module lock while it holds a pool lock. Every PKCS#11 session exists either in a pool's
//! idle list or in a [`Lease`], and a lease holds the module's read lock for as long as it lives;
//! so when the module's write lock is held (re-initialisation), no session is in use and every
//! idle one can be closed before `C_Finalize`. A session opened before a `C_Finalize` is never
//! closed after it, where its handle could by then name someone else's session.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard,
    RwLockWriteGuard, Weak,
};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::error::{Class, classify, is_rv, map};
use crate::{HsmError, Pkcs11Uri};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// The state of a module's library: initialised or not, and which incarnation (`epoch` grows on
/// every `C_Initialize`; object handles and sessions belong to one epoch).
#[derive(Debug)]
pub(crate) struct Life {
    epoch: u64,
    initialized: bool,
    reinits: u64,
}

/// One PKCS#11 library, loaded once per process and kept loaded (never `dlclose`d: some
/// modules do not survive being unloaded and loaded again).
pub(crate) struct Module {
    path: PathBuf,
    ctx: Pkcs11,
    life: RwLock<Life>,
    pools: Mutex<Vec<Weak<Pool>>>,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();

impl Module {
    /// The process's instance of the module at `path`, loaded and initialised.
    fn get(path: &Path) -> Result<Arc<Module>, HsmError> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let module = {
            let mut registry = lock(MODULES.get_or_init(Mutex::default));
            if let Some(module) = registry.get(&key) {
                Arc::clone(module)
            } else {
                let ctx = Pkcs11::new(path).map_err(|e| {
                    HsmError::Unavailable(format!(
                        "the PKCS#11 module {} could not be loaded: {e}",
                        path.display()
                    ))
                })?;
                let module = Arc::new(Module {
                    path: path.to_path_buf(),
                    ctx,
                    life: RwLock::new(Life {
                        epoch: 0,
                        initialized: false,
                        reinits: 0,
                    }),
                    pools: Mutex::default(),
                });
                registry.insert(key, Arc::clone(&module));
                module
            }
        };
        if !read(&module.life).initialized {
            let mut life = write(&module.life);
            module.initialize(&mut life)?;
        }
        Ok(module)
    }

    /// `C_Initialize` (OS locking), with the write lock held.
    fn initialize(&self, life: &mut Life) -> Result<(), HsmError> {
        if life.initialized {
            return Ok(());
        }
        let args = CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK);
        match self.ctx.initialize(args) {
            // Someone else in the process initialised it: fine, it is one library.
            Err(e) if !is_rv(&e, RvError::CryptokiAlreadyInitialized) => {
                Err(HsmError::Unavailable(format!(
                    "C_Initialize of the PKCS#11 module {} failed: {e}",
                    self.path.display()
                )))
            }
            _ => {
                life.initialized = true;
                life.epoch += 1;
                Ok(())
            }
        }
    }

    /// `C_Finalize` then `C_Initialize`, unless someone already did it since `failed_epoch`.
    /// Every token's idle sessions on this module are closed first (no lease exists while the
    /// write lock is held).
    fn reinitialize(&self, failed_epoch: u64) -> Result<(), HsmError> {
        let mut life = write(&self.life);
        if life.epoch != failed_epoch {
            return self.initialize(&mut life);
        }
        let pools: Vec<Arc<Pool>> = {
            let mut pools = lock(&self.pools);
            pools.retain(|p| p.strong_count() > 0);
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        for pool in pools {
            pool.purge();
        }
        if life.initialized {
            // Its result does not matter: the library is started afresh either way.
            let _ = self.ctx.clone().finalize();
            life.initialized = false;
            life.epoch += 1;
        }
        life.reinits += 1;
        self.initialize(&mut life)
    }

    fn register(&self, pool: &Arc<Pool>) {
        let mut pools = lock(&self.pools);
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    fn current(&self) -> (u64, bool) {
        let life = read(&self.life);
        (life.epoch, life.initialized)
    }
}

/// How a [`Token`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenOptions {
    /// Most sessions open at once (at least 1). Every key on the token shares them.
    pub pool_size: usize,
    /// How long a call waits for a free session (or for a reconnection in progress) before it
    /// answers [`HsmError::Unavailable`].
    pub acquire_timeout: Duration,
    /// After a failed reconnection, calls answer the last error at once until this much time
    /// has passed; then one call tries again (re-initialising the library). This keeps a missing
    /// token from being hammered, and the other tokens on the module from being disturbed, more
    /// than once per interval.
    pub retry_interval: Duration,
}

impl TokenOptions {
    /// `pool_size` sessions, a 10 s acquire timeout and a 1 s retry interval.
    #[must_use]
    pub fn new(pool_size: usize) -> Self {
        TokenOptions {
            pool_size,
            acquire_timeout: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
        }
    }
    /// Sets [`TokenOptions::acquire_timeout`].
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
    /// Sets [`TokenOptions::retry_interval`].
    #[must_use]
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }
}

/// What the pool has done so far (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The configured bound.
    pub pool_size: usize,
    /// Sessions open now (idle + in use).
    pub open: usize,
    /// Sessions in use now.
    pub in_use: usize,
    /// The most sessions ever open at once.
    pub peak_open: usize,
    /// The most sessions ever in use at once.
    pub peak_in_use: usize,
    /// Sessions opened (and logged in) in the token's life.
    pub sessions_opened: u64,
    /// Successful connections: 1 for [`Token::open`], then one per recovery.
    pub connects: u64,
    /// `C_Finalize` + `C_Initialize` of the module, by any token on it, so far.
    pub library_reinits: u64,
    /// True when the token is usable now (no failure seen since the last connection).
    pub ready: bool,
}

#[derive(Default)]
struct PoolState {
    ready: bool,
    epoch: u64,
    slot: Option<Slot>,
    idle: Vec<Session>,
    in_use: usize,
    open: usize,
    /// A device-level failure was seen at this module epoch: the next reconnection
    /// re-initialises the library (if nobody has since).
    failed_epoch: Option<u64>,
    /// A failure that retrying cannot fix (a wrong or locked PIN): answered until the token is
    /// opened again, never retried (retried logins lock a PIN).
    fatal: Option<HsmError>,
    reconnecting: bool,
    last_attempt: Option<Instant>,
    last_error: Option<HsmError>,
    peak_open: usize,
    peak_in_use: usize,
    sessions_opened: u64,
    connects: u64,
}

impl PoolState {
    fn take_one(&mut self) {
        self.in_use += 1;
        self.peak_in_use = self.peak_in_use.max(self.in_use);
    }

    /// Marks the pool failed, if it is still at the epoch the failure was seen in (a failure
    /// seen on a session from before a reconnection says nothing about the new one).
    fn fail(&mut self, epoch: u64, error: &HsmError) {
        if self.epoch == epoch && self.ready {
            self.ready = false;
            self.failed_epoch = Some(epoch);
            self.last_error = Some(error.clone());
        }
    }
}

/// Clears the pool's `reconnecting` flag if a reconnection unwinds.
struct Reconnecting<'a>(&'a Pool);

impl Drop for Reconnecting<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).reconnecting = false;
        self.0.wake_all();
    }
}

pub(crate) struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a reconnection ends (waiters: `ensure_ready`).
    cond: Condvar,
    /// Signalled when a session is returned or a slot frees (waiters: `lease`), one waiter per
    /// returned session; all of them when the pool's state changes.
    freed: Condvar,
}

impl Pool {
    fn wake_all(&self) {
        self.cond.notify_all();
        self.freed.notify_all();
    }

    /// Closes the idle sessions and marks the pool for reconnection. Called with the module's
    /// write lock held, before `C_Finalize`.
    fn purge(&self) {
        let idle = {
            let mut st = lock(&self.state);
            st.ready = false;
            st.open -= st.idle.len();
            std::mem::take(&mut st.idle)
        };
        drop(idle);
        self.wake_all();
    }
}

/// One token (module + token label) with a small pool of logged-in sessions shared by every key
/// on it. `Send + Sync`; share it as `Arc<Token>`. Its `Debug` shows no PIN.
///
/// Every call is synchronous and may block (on the token, or for up to
/// [`TokenOptions::acquire_timeout`] waiting for a free session): call it from a blocking
/// context (`tokio::task::spawn_blocking`, or a thread of one's own).
pub struct Token {
    uri: Pkcs11Uri,
    pin: Zeroizing<String>,
    opts: TokenOptions,
    module: Arc<Module>,
    pool: Arc<Pool>,
    pub(crate) generate_lock: Mutex<()>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("uri", &self.uri.to_string())
            .field("pin", &"<redacted>")
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        // Closed under the module's read lock, so never across a re-initialisation.
        let _life = read(&self.module.life);
        let idle = std::mem::take(&mut lock(&self.pool.state).idle);
        drop(idle);
    }
}

impl Token {
    /// Loads the module (once per process), finds the token by its label (and serial,
    /// manufacturer, model when the URI gives them), reads the PIN from the URI's `pin-source`,
    /// opens one session and logs in. Object attributes of `uri` are ignored here.
    ///
    /// # Errors
    ///
    /// [`HsmError::Config`] for no or an unreadable PIN source, a wrong or locked PIN, several
    /// tokens matching, a pool size of 0; [`HsmError::Unavailable`] for a module that does not
    /// load or initialise and for no such token.
    pub fn open(uri: &Pkcs11Uri, pool_size: usize) -> Result<Arc<Self>, HsmError> {
        Self::open_with(uri, TokenOptions::new(pool_size))
    }

    /// [`Token::open`] with every option.
    ///
    /// # Errors
    ///
    /// As [`Token::open`].
    pub fn open_with(uri: &Pkcs11Uri, options: TokenOptions) -> Result<Arc<Self>, HsmError> {
        if options.pool_size == 0 {
            return Err(HsmError::Config(
                "the session pool size must be at least 1".into(),
            ));
        }
        let Some(source) = uri.pin_source() else {
            return Err(HsmError::Config(format!(
                "{uri} has no pin-source: the token's user PIN is needed to use its private keys"
            )));
        };
        let pin = source.read()?;
        let module = Module::get(uri.module_path())?;
        let pool = Arc::new(Pool {
            state: Mutex::default(),
            cond: Condvar::new(),
            freed: Condvar::new(),
        });
        module.register(&pool);
        let token = Arc::new(Token {
            uri: uri.token_uri(),
            pin,
            opts: options,
            module,
            pool,
            generate_lock: Mutex::new(()),
        });
        token.ensure_ready(Instant::now() + token.opts.acquire_timeout)?;
        Ok(token)
    }

    /// The token's URI (no object attributes).
    #[must_use]
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    /// The options it was opened with.
    #[must_use]
    pub fn options(&self) -> &TokenOptions {
        &self.opts
    }

    /// A cheap check that the token answers (`C_GetTokenInfo` on its slot), reconnecting first
    /// if it had gone away.
    ///
    /// # Errors
    ///
    /// [`HsmError::Unavailable`] when it does not; [`HsmError::Config`] after a wrong PIN.
    pub fn probe(&self) -> Result<(), HsmError> {
        self.run(|lease| lease.check_token().map_err(Step::Hsm))
    }

    /// The pool's counters.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let library_reinits = read(&self.module.life).reinits;
        let st = lock(&self.pool.state);
        PoolStats {
            pool_size: self.opts.pool_size,
            open: st.open,
            in_use: st.in_use,
            peak_open: st.peak_open,
            peak_in_use: st.peak_in_use,
            sessions_opened: st.sessions_opened,
            connects: st.connects,
            library_reinits,
            ready: st.ready && st.fatal.is_none(),
        }
    }

    /// Makes the pool usable: nothing if it is; else waits for a reconnection in progress, or
    /// answers the last error while the retry interval runs, or reconnects.
    fn ensure_ready(&self, deadline: Instant) -> Result<(), HsmError> {
        loop {
            let (epoch, initialized) = self.module.current();
            let mut st = lock(&self.pool.state);
            if let Some(e) = &st.fatal {
                return Err(e.clone());
            }
            if st.ready && st.epoch == epoch && initialized {
                return Ok(());
            }
            if st.reconnecting {
                let now = Instant::now();
                if now >= deadline {
                    return Err(HsmError::Unavailable(format!(
                        "token '{}' is reconnecting; gave up after {:?}",
                        self.uri.token(),
                        self.opts.acquire_timeout
                    )));
                }
                drop(
                    self.pool
                        .cond
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner),
                );
                continue;
            }
            if let Some(at) = st.last_attempt
                && at.elapsed() < self.opts.retry_interval
                && let Some(e) = &st.last_error
            {
                return Err(e.clone());
            }
            st.reconnecting = true;
            st.last_attempt = Some(Instant::now());
            // An epoch the pool never caught up with (another token re-initialised the
            // module) needs no new re-initialisation, only a reconnection.
            let failed = st.failed_epoch;
            drop(st);

            // Should reconnect() panic, the others must not wait for it forever.
            let guard = Reconnecting(&self.pool);
            let result = self.reconnect(failed);
            let epoch_now = self.module.current().0;
            std::mem::forget(guard);

            let mut st = lock(&self.pool.state);
            st.reconnecting = false;
            match &result {
                Ok(()) => {
                    st.last_error = None;
                    st.failed_epoch = None;
                    st.connects += 1;
                }
                Err(e) => {
                    st.last_error = Some(e.clone());
                    if matches!(e, HsmError::Unavailable(_)) {
                        // Whatever is missing may come back only with a fresh library (SoftHSM,
                        // for one, reads its token directory at C_Initialize).
                        st.failed_epoch = Some(epoch_now);
                    }
                }
            }
            drop(st);
            self.pool.wake_all();
            return result;
        }
    }

    fn reconnect(&self, failed_epoch: Option<u64>) -> Result<(), HsmError> {
        if let Some(epoch) = failed_epoch {
            self.module.reinitialize(epoch)?;
        } else if !self.module.current().1 {
            let mut life = write(&self.module.life);
            self.module.initialize(&mut life)?;
        }
        let life = read(&self.module.life);
        if !life.initialized {
            return Err(HsmError::Unavailable(format!(
                "the PKCS#11 module {} is not initialised",
                self.module.path.display()
            )));
        }
        let slot = self.find_slot()?;
        let session = self.open_session(slot)?;
        let mut st = lock(&self.pool.state);
        st.slot = Some(slot);
        st.epoch = life.epoch;
        st.ready = true;
        st.idle.push(session);
        st.open += 1;
        st.sessions_opened += 1;
        st.peak_open = st.peak_open.max(st.open);
        Ok(())
    }

    fn find_slot(&self) -> Result<Slot, HsmError> {
        let ctx = &self.module.ctx;
        let module = self.module.path.display();
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| map(&format!("list the slots of {module}"), &e))?;
        let mut present = Vec::new();
        let mut matching = Vec::new();
        for slot in slots {
            let Ok(info) = ctx.get_token_info(slot) else {
                continue;
            };
            if !info.token_initialized() {
                continue;
            }
            present.push(info.label().to_owned());
            let matches = info.label() == self.uri.token()
                && self.uri.serial().is_none_or(|s| s == info.serial_number())
                && self
                    .uri
                    .manufacturer()
                    .is_none_or(|m| m == info.manufacturer_id())
                && self.uri.model().is_none_or(|m| m == info.model());
            if matches {
                if !info.user_pin_initialized() {
                    return Err(HsmError::Config(format!(
                        "token '{}' has no user PIN set (initialise it first)",
                        self.uri.token()
                    )));
                }
                matching.push(slot);
            }
        }
        match matching.as_slice() {
            [slot] => Ok(*slot),
            [] => Err(HsmError::Unavailable(format!(
                "no token labelled '{}' (with the URI's serial/manufacturer/model) in {module}; tokens present: {present:?}",
                self.uri.token()
            ))),
            many => Err(HsmError::Config(format!(
                "{} tokens match '{}' in {module}: add serial= to the URI",
                many.len(),
                self.uri.token()
            ))),
        }
    }

    /// A new read-write session on `slot`, logged in as the user.
    fn open_session(&self, slot: Slot) -> Result<Session, HsmError> {
        let label = self.uri.token();
        let session = self
            .module
            .ctx
            .open_rw_session(slot)
            .map_err(|e| map(&format!("open a session on token '{label}'"), &e))?;
        let pin = AuthPin::from(self.pin.as_str());
        match session.login(UserType::User, Some(&pin)) {
            // The login state is the application's, shared by its sessions on the token.
            Err(e) if !is_rv(&e, RvError::UserAlreadyLoggedIn) => {
                let err = map(&format!("log in to token '{label}'"), &e);
                if classify(&e) == Class::Pin {
                    lock(&self.pool.state).fatal = Some(err.clone());
                }
                Err(err)
            }
            _ => Ok(session),
        }
    }

    /// A session for one operation, holding the module's read lock.
    pub(crate) fn lease(&self) -> Result<Lease<'_>, HsmError> {
        let deadline = Instant::now() + self.opts.acquire_timeout;
        loop {
            self.ensure_ready(deadline)?;
            let life = read(&self.module.life);
            let mut st = lock(&self.pool.state);
            loop {
                if st.fatal.is_some() || !st.ready || st.epoch != life.epoch || !life.initialized {
                    break;
                }
                let (epoch, Some(slot)) = (st.epoch, st.slot) else {
                    break;
                };
                if let Some(session) = st.idle.pop() {
                    st.take_one();
                    drop(st);
                    return Ok(Lease::new(self, life, session, epoch, slot));
                }
                if st.open < self.opts.pool_size {
                    st.open += 1;
                    st.peak_open = st.peak_open.max(st.open);
                    st.take_one();
                    drop(st);
                    match self.open_session(slot) {
                        Ok(session) => {
                            lock(&self.pool.state).sessions_opened += 1;
                            return Ok(Lease::new(self, life, session, epoch, slot));
                        }
                        Err(e) => {
                            let mut st = lock(&self.pool.state);
                            st.open -= 1;
                            st.in_use -= 1;
                            if matches!(e, HsmError::Unavailable(_)) {
                                st.fail(epoch, &e);
                            }
                            drop(st);
                            self.pool.wake_all();
                            return Err(e);
                        }
                    }
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(HsmError::Unavailable(format!(
                        "no free session on token '{}' within {:?} ({} in use)",
                        self.uri.token(),
                        self.opts.acquire_timeout,
                        st.in_use
                    )));
                }
                st = self
                    .pool
                    .freed
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }

    /// Runs `op` with a leased session. A session-level failure (the session closed, logged
    /// out…) drops that session and the idle ones and tries once more with a fresh session
    /// (logged in again); a second one in a row, or a device-level failure, marks the token
    /// failed and answers [`HsmError::Unavailable`]. A stale object handle first checks that the
    /// token still answers and the session is logged in, then lets `op` look its object up
    /// again once; a second stale handle marks the token failed.
    pub(crate) fn run<T>(
        &self,
        mut op: impl FnMut(&mut Lease<'_>) -> Result<T, Step>,
    ) -> Result<T, HsmError> {
        let mut retried = false;
        loop {
            let mut lease = self.lease()?;
            let (what, e) = match op(&mut lease) {
                Ok(v) => return Ok(v),
                Err(Step::Hsm(e)) => return Err(e),
                Err(Step::Ck(what, e)) => (what, e),
            };
            let err = map(&what, &e);
            match classify(&e) {
                Class::Session => {
                    // The idle sessions likely share its fate (a logout, a C_CloseAllSessions
                    // by another user of the library): the retry gets a fresh session.
                    lease.discard = true;
                    lease.drop_idle();
                    if !retried {
                        retried = true;
                        continue;
                    }
                    lease.fail(&err);
                    return Err(err);
                }
                Class::Device => {
                    lease.fail(&err);
                    return Err(err);
                }
                Class::Handle => {
                    lease.check_token()?;
                    if let Err(Step::Ck(what, e)) = lease.ensure_logged_in() {
                        // Not a stale handle: a logged-out session (or a dead one).
                        let err = map(&what, &e);
                        if classify(&e) == Class::Device {
                            lease.fail(&err);
                            return Err(err);
                        }
                        lease.discard = true;
                        lease.drop_idle();
                        if !retried {
                            retried = true;
                            continue;
                        }
                        lease.fail(&err);
                        return Err(err);
                    }
                    if !retried {
                        retried = true;
                        continue;
                    }
                    // Twice: the token answers but keeps losing the object. Taken as the
                    // token's failure, so that the library is re-initialised.
                    let err = HsmError::Unavailable(err.to_string());
                    lease.fail(&err);
                    return Err(err);
                }
                Class::Pin | Class::Refused | Class::Other => return Err(err),
            }
        }
    }
}

/// What an operation under a lease ended with: a crate error as is, or a cryptoki error to sort
/// (with what was being done, for the message).
#[derive(Debug)]
pub(crate) enum Step {
    Hsm(HsmError),
    Ck(String, CkError),
}

impl From<HsmError> for Step {
    fn from(e: HsmError) -> Self {
        Step::Hsm(e)
    }
}

/// `map_err` helper: names the operation of a cryptoki call.
pub(crate) fn ck(what: impl Into<String>) -> impl FnOnce(CkError) -> Step {
    let what = what.into();
    move |e| Step::Ck(what, e)
}

/// One session, checked out of the pool for one operation.
pub(crate) struct Lease<'a> {
    token: &'a Token,
    session: Option<Session>,
    epoch: u64,
    slot: Slot,
    discard: bool,
    // Dropped after the session is closed or returned (Drop runs before the fields drop).
    _life: RwLockReadGuard<'a, Life>,
}

impl<'a> Lease<'a> {
    fn new(
        token: &'a Token,
        life: RwLockReadGuard<'a, Life>,
        session: Session,
        epoch: u64,
        slot: Slot,
    ) -> Self {
        Lease {
            token,
            session: Some(session),
            epoch,
            slot,
            discard: false,
            _life: life,
        }
    }

    #[expect(
        clippy::expect_used,
        reason = "the session is taken out only in Drop: a live lease always holds it"
    )]
    pub(crate) fn session(&self) -> &Session {
        self.session
            .as_ref()
            .expect("a lease holds its session until dropped")
    }

    /// The library incarnation this session (and any object handle found with it) belongs to.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Marks the token failed: its sessions are dropped and the next call reconnects.
    pub(crate) fn fail(&mut self, error: &HsmError) {
        self.discard = true;
        let mut st = lock(&self.token.pool.state);
        st.fail(self.epoch, error);
        drop(st);
        self.token.pool.wake_all();
    }

    /// Closes the pool's idle sessions (under this lease's read lock).
    fn drop_idle(&self) {
        let idle = {
            let mut st = lock(&self.token.pool.state);
            if st.epoch == self.epoch {
                st.open -= st.idle.len();
                std::mem::take(&mut st.idle)
            } else {
                Vec::new()
            }
        };
        drop(idle);
        self.token.pool.freed.notify_all();
    }

    /// Checks that the session is logged in as the user (`C_GetSessionInfo`). Private objects
    /// are invisible to a session that is not: a logout by another user of the library would
    /// otherwise look like a deleted key. The error it answers is sorted as a session failure.
    pub(crate) fn ensure_logged_in(&self) -> Result<(), Step> {
        let info = self
            .session()
            .get_session_info()
            .map_err(ck("query the session"))?;
        match info.session_state() {
            SessionState::RoUser | SessionState::RwUser => Ok(()),
            _ => Err(Step::Ck(
                "the session is no longer logged in".into(),
                CkError::Pkcs11(RvError::UserNotLoggedIn, Function::GetSessionInfo),
            )),
        }
    }

    /// `C_GetTokenInfo` on the token's slot; a failure marks the token failed.
    pub(crate) fn check_token(&mut self) -> Result<(), HsmError> {
        match self.token.module.ctx.get_token_info(self.slot) {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = map(&format!("query token '{}'", self.token.uri.token()), &e);
                let err = match err {
                    HsmError::Unavailable(_) => err,
                    other => HsmError::Unavailable(other.to_string()),
                };
                self.fail(&err);
                Err(err)
            }
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let mut st = lock(&self.token.pool.state);
        st.in_use -= 1;
        if !self.discard && st.ready && st.epoch == self.epoch {
            st.idle.push(session);
            drop(st);
            // One session back: one waiter can have it.
            self.token.pool.freed.notify_one();
        } else {
            st.open -= 1;
            drop(st);
            // C_CloseSession, with the module's read lock still held.
            drop(session);
            self.token.pool.wake_all();
        }
    }
}
