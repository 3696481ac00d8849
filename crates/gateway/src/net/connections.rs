//! The open client connections, and what keeps a flood of them from starving real clients.
//!
//! - **Caps**: at most `max_total` connections, and `max_per_ip` from one client address (not
//!   loopback, where a local proxy's connections all come from). An IPv6 client is keyed on its
//!   /64 (see [`client_key`]): one host is routinely given a whole /64, so keying the full address
//!   would let it open `max_per_ip` connections from each of 2^64 addresses. A new
//!   connection over a cap makes room by closing the oldest *idle* connection (one with no
//!   request in flight: a keep-alive connection waiting, or a client still dribbling its
//!   headers) of the same address, or of anyone for the total cap. Only when every connection
//!   is busy is the new one refused, at once, by closing it.
//! - **Rate**: new connections from one client address (again not loopback) are paced by a
//!   governor keyed limiter, `max_new_per_sec` a second with twice that at once, so a client that
//!   opens and drops connections in a loop costs us little more than the `accept`.
//! - **First request**: a connection that has not delivered a complete request head within the
//!   header-read timeout is closed. hyper's own HTTP/1 header-read timeout covers every later
//!   request head (and so idle keep-alive), but not the first bytes: hyper-util reads the
//!   protocol preface before hyper sees the connection, with no deadline.
//!
//! The table is a `Mutex<BTreeMap>` keyed by accept order, locked briefly on accept and close,
//! never across an await; requests in flight are a per-connection atomic the request path bumps.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// Caps on open connections; `0` means no cap.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_total: usize,
    pub max_per_ip: usize,
    /// New connections per second from one (non-loopback) address.
    pub max_new_per_sec: u32,
}

type IpLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

#[derive(Debug)]
pub struct Connections {
    caps: Caps,
    /// `None` when `max_new_per_sec` is 0.
    pace: Option<IpLimiter>,
    table: Mutex<Table>,
    /// Connections refused because every connection was busy.
    refused: AtomicUsize,
    /// Idle connections closed to make room for a new one.
    evicted: AtomicUsize,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    activity: Arc<Activity>,
    close: CancellationToken,
}

/// What the request path tells the table about one connection.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    requests: AtomicUsize,
    /// Requests in flight whose body has not arrived yet: they do not make the connection busy,
    /// so a client trickling bodies cannot hold the connection cap (see `crate::net::body`).
    awaiting_body: AtomicUsize,
}

impl Activity {
    /// A request head arrived; the returned guard marks its end (drop it with the response body).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Complete request heads seen so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// The request just begun has a body still to come; the guard marks its arrival (or end).
    pub fn awaiting_body(self: &Arc<Self>) -> AwaitingBody {
        self.awaiting_body.fetch_add(1, Ordering::Relaxed);
        AwaitingBody(self.clone())
    }

    fn idle(&self) -> bool {
        let waiting = self.awaiting_body.load(Ordering::Relaxed);
        self.in_flight.load(Ordering::Relaxed) <= waiting
    }
}

/// A request whose body has not arrived, until dropped.
#[derive(Debug)]
pub struct AwaitingBody(Arc<Activity>);

impl Drop for AwaitingBody {
    fn drop(&mut self) {
        self.0.awaiting_body.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request in flight on a connection, until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An admitted connection: its activity, the signal that it must close, and its slot in the
/// table (given back on drop).
#[derive(Debug)]
pub struct Admitted {
    pub activity: Arc<Activity>,
    pub close: CancellationToken,
    id: u64,
    table: Arc<Connections>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

impl Connections {
    pub fn caps(&self) -> Caps {
        self.caps
    }

    pub fn new(caps: Caps) -> Arc<Self> {
        let pace = std::num::NonZeroU32::new(caps.max_new_per_sec).map(|n| {
            let burst = n.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1)); // 2n
            governor::RateLimiter::keyed(governor::Quota::per_second(n).allow_burst(burst))
        });
        Arc::new(Self {
            caps,
            pace,
            table: Mutex::new(Table::default()),
            refused: AtomicUsize::new(0),
            evicted: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing in the table can be left half-updated by a panic: keep serving.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `ip`, closing an idle one if a cap is reached, or `None` if
    /// every connection that could make room is busy.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let ip = client_key(ip);
        if !ip.is_loopback() {
            if let Some(pace) = &self.pace {
                if pace.check_key(&ip).is_err() {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let mut t = self.lock();
        let from_ip = t.per_ip.get(&ip).copied().unwrap_or(0);
        // Loopback is exempt from the per-address cap: behind a proxy on the same machine every
        // client arrives from it.
        if self.caps.max_per_ip > 0
            && !ip.is_loopback()
            && from_ip >= self.caps.max_per_ip
            && !self.evict(&mut t, Some(ip))
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self.caps.max_total > 0
            && t.open.len() >= self.caps.max_total
            && !self.evict(&mut t, None)
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = t.next;
        t.next += 1;
        let activity = Arc::new(Activity::default());
        let close = CancellationToken::new();
        t.open.insert(
            id,
            Entry {
                ip,
                activity: activity.clone(),
                close: close.clone(),
            },
        );
        *t.per_ip.entry(ip).or_insert(0) += 1;
        Some(Admitted {
            activity,
            close,
            id,
            table: self.clone(),
        })
    }

    /// Closes the oldest idle connection (of `ip`, if given) and frees its slot now, so that the
    /// count is right before its task has even run.
    fn evict(&self, t: &mut Table, ip: Option<IpAddr>) -> bool {
        let victim = t
            .open
            .iter()
            .find(|(_, e)| ip.is_none_or(|ip| e.ip == ip) && e.activity.idle())
            .map(|(id, _)| *id);
        let Some(id) = victim else {
            return false;
        };
        if let Some(e) = Self::take(t, id) {
            e.close.cancel();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    fn take(t: &mut Table, id: u64) -> Option<Entry> {
        let e = t.open.remove(&id)?;
        if let Some(n) = t.per_ip.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                t.per_ip.remove(&e.ip);
            }
        }
        Some(e)
    }

    fn remove(&self, id: u64) {
        let mut t = self.lock();
        Self::take(&mut t, id);
    }

    /// Forgets the pace of addresses not seen for a while (call now and then: the limiter keeps
    /// one entry per address it has seen).
    pub fn forget_idle_addresses(&self) {
        if let Some(pace) = &self.pace {
            pace.retain_recent();
            pace.shrink_to_fit();
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn evicted(&self) -> usize {
        self.evicted.load(Ordering::Relaxed)
    }
}

/// The address the per-address cap and pace count a connection under: an IPv4 address (an
/// IPv4-mapped IPv6 address is the IPv4 client it wraps) as is, an IPv6 address as its /64
/// network. ISPs and clouds hand one customer a /64 (RFC 6177's minimum end-site assignment), so
/// the address bits past 64 are the client's to choose. Loopback stays loopback (`::1` is not
/// masked), which keeps its exemption.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if !v6.is_loopback() => IpAddr::V6(std::net::Ipv6Addr::from(
            v6.to_bits() & !((1u128 << 64) - 1),
        )),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_opening_connections_in_a_loop_is_paced_others_are_not() {
        let c = Connections::new(Caps {
            max_total: 0,
            max_per_ip: 0,
            max_new_per_sec: 5,
        });
        // A burst of twice the rate, then refused (within the same instant).
        let admitted = (0..20).filter_map(|_| c.admit(ip("10.0.0.1"))).count();
        assert_eq!(admitted, 10);
        assert_eq!(c.refused(), 10);
        assert!(
            c.admit(ip("10.0.0.2")).is_some(),
            "another address is not affected"
        );
        assert!(
            (0..50).all(|_| c.admit(ip("127.0.0.1")).is_some()),
            "loopback (a local proxy) is not paced"
        );
        c.forget_idle_addresses();
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let c = Connections::new(Caps {
            max_total: 3,
            max_per_ip: 0,
            max_new_per_sec: 0,
        });
        let a = c.admit(ip("10.0.0.1")).unwrap();
        let b = c.admit(ip("10.0.0.2")).unwrap();
        let busy = b.activity.begin();
        let d = c.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(c.open(), 3);
        // Full: the oldest idle one (a) is told to close; b is busy and stays.
        let e = c.admit(ip("10.0.0.4")).unwrap();
        assert!(a.close.is_cancelled());
        assert!(!b.close.is_cancelled());
        assert_eq!(c.open(), 3);
        drop(a); // its task ends: no double count
        assert_eq!(c.open(), 3);
        // Everyone busy: refused.
        let _g1 = d.activity.begin();
        let _g2 = e.activity.begin();
        assert!(c.admit(ip("10.0.0.5")).is_none());
        assert_eq!(c.refused(), 1);
        drop(busy);
        assert!(c.admit(ip("10.0.0.5")).is_some());
        assert!(b.close.is_cancelled());
        assert_eq!(c.evicted(), 2);
    }

    #[test]
    fn a_request_whose_body_has_not_arrived_leaves_its_connection_idle() {
        let c = Connections::new(Caps {
            max_total: 1,
            max_per_ip: 0,
            max_new_per_sec: 0,
        });
        let a = c.admit(ip("10.0.0.1")).unwrap();
        let _req = a.activity.begin();
        let body = a.activity.awaiting_body();
        let b = c.admit(ip("10.0.0.2")).unwrap();
        assert!(
            a.close.is_cancelled(),
            "a trickling body does not hold the cap"
        );
        drop(body);
        let _req = b.activity.begin();
        let body = b.activity.awaiting_body();
        drop(body); // the body arrived: the request is being answered
        assert!(c.admit(ip("10.0.0.3")).is_none());
        assert!(!b.close.is_cancelled());
    }

    #[test]
    fn the_per_address_cap_evicts_only_that_address() {
        let c = Connections::new(Caps {
            max_total: 0,
            max_per_ip: 2,
            max_new_per_sec: 0,
        });
        let other = c.admit(ip("10.0.0.9")).unwrap();
        let a1 = c.admit(ip("10.0.0.1")).unwrap();
        let a2 = c.admit(ip("10.0.0.1")).unwrap();
        let _busy = a2.activity.begin();
        let _a3 = c.admit(ip("10.0.0.1")).unwrap();
        assert!(a1.close.is_cancelled());
        assert!(!other.close.is_cancelled());
        // Loopback has no per-address cap.
        let _l: Vec<_> = (0..5).map(|_| c.admit(ip("127.0.0.1")).unwrap()).collect();
        assert!(!a2.close.is_cancelled());
        // IPv4-mapped IPv6 is the same client.
        let _a4 = c.admit(ip("::ffff:10.0.0.1")).unwrap();
        assert!(_a3.close.is_cancelled());
        assert!(!a2.close.is_cancelled());
        assert_eq!(c.open(), 8);
    }

    #[test]
    fn ipv6_clients_are_keyed_on_their_64() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(client_key(ip("2001:db8:1:2::1")), ip("2001:db8:1:2::"));
        assert_ne!(client_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::1")), ip("::1"));

        let c = Connections::new(Caps {
            max_total: 0,
            max_per_ip: 2,
            max_new_per_sec: 0,
        });
        let a1 = c.admit(ip("2001:db8::1")).unwrap();
        let a2 = c.admit(ip("2001:db8::2")).unwrap();
        let _b1 = a1.activity.begin();
        let _b2 = a2.activity.begin();
        // A third address of the same /64, both others busy: refused, not a fresh quota.
        assert!(c.admit(ip("2001:db8::3")).is_none());
        assert_eq!(c.refused(), 1);
        // Another /64 is another client.
        assert!(c.admit(ip("2001:db8:0:1::1")).is_some());

        // The pace is per /64 too.
        let paced = Connections::new(Caps {
            max_total: 0,
            max_per_ip: 0,
            max_new_per_sec: 5,
        });
        let admitted = (0..20u16)
            .filter_map(|n| {
                paced.admit(IpAddr::V6(std::net::Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    n + 1,
                )))
            })
            .count();
        assert_eq!(admitted, 10);
    }
}
