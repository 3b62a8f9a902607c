//! Who gets a connection: a cap on the connections one client address
//! holds (an IPv6 client counts by its /64, the block one machine gets),
//! and, when every connection slot is taken, room made by closing the
//! oldest connection that has not sent a request yet (a silent socket,
//! a half-sent preface, a stalled TLS handshake) rather than making a new
//! client wait behind it.

use super::activity::Activity;
use crate::auth::client_key;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// A connection waiting for its first request.
struct Fresh {
    activity: Arc<Activity>,
    close: Arc<Notify>,
}

/// The shared book of open connections.
pub struct Admission {
    per_client: usize,
    clients: Mutex<HashMap<IpAddr, usize>>,
    /// Connections without a request yet, oldest first.
    fresh: Mutex<BTreeMap<u64, Fresh>>,
    next: AtomicU64,
}

/// One admitted connection; dropping it gives its place back.
pub struct Ticket {
    admission: Arc<Admission>,
    key: IpAddr,
    id: u64,
    /// Notified when the connection is closed to make room.
    pub close: Arc<Notify>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admission {
    pub fn new(per_client: usize) -> Arc<Admission> {
        Arc::new(Admission {
            per_client,
            clients: Mutex::new(HashMap::new()),
            fresh: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        })
    }

    /// Admits a connection from `addr`, or `None` when that client already
    /// holds its share.
    pub fn admit(self: &Arc<Self>, addr: IpAddr, activity: &Arc<Activity>) -> Option<Ticket> {
        let key = client_key(addr);
        {
            let mut clients = lock(&self.clients);
            let n = clients.entry(key).or_insert(0);
            if *n >= self.per_client {
                return None;
            }
            *n += 1;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        lock(&self.fresh).insert(
            id,
            Fresh {
                activity: activity.clone(),
                close: close.clone(),
            },
        );
        Some(Ticket {
            admission: self.clone(),
            key,
            id,
            close,
        })
    }

    /// Closes the oldest connection that has not sent a request, other
    /// than `newcomer`'s (the admitted connection room is made for).
    /// Returns whether there was one.
    pub fn shed_oldest(&self, newcomer: &Ticket) -> bool {
        let mut fresh = lock(&self.fresh);
        let mut served = Vec::new();
        let mut shed = None;
        for (id, f) in fresh.iter() {
            if *id == newcomer.id {
                continue;
            }
            if f.activity.served() {
                // Ones that have sent a request since are simply forgotten.
                served.push(*id);
            } else {
                shed = Some(*id);
                break;
            }
        }
        for id in served {
            fresh.remove(&id);
        }
        match shed.and_then(|id| fresh.remove(&id)) {
            Some(f) => {
                f.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Connections open from the client `addr` counts as.
    pub fn open_from(&self, addr: IpAddr) -> usize {
        lock(&self.clients)
            .get(&client_key(addr))
            .copied()
            .unwrap_or(0)
    }
}

impl Ticket {
    /// The connection has sent its first request: it is no longer a
    /// candidate for making room.
    pub fn served(&self) {
        lock(&self.admission.fresh).remove(&self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.admission.fresh).remove(&self.id);
        let mut clients = lock(&self.admission.clients);
        if let Some(n) = clients.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_counted_by_address_and_ipv6_by_64() {
        for (a, b, same) in [
            ("10.0.0.1", "10.0.0.1", true),
            ("10.0.0.1", "10.0.0.2", false),
            ("::ffff:10.0.0.1", "10.0.0.1", true),
            ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true),
            ("2001:db8:1:2::1", "2001:db8:1:3::1", false),
        ] {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(client_key(a) == client_key(b), same, "{a} {b}");
        }
    }

    #[test]
    fn each_client_holds_at_most_its_share() {
        let adm = Admission::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let act = Activity::new();
        let t1 = adm.admit(a, &act).unwrap();
        let _t2 = adm.admit(a, &act).unwrap();
        assert!(adm.admit(a, &act).is_none());
        let _t3 = adm.admit(b, &act).unwrap();
        drop(t1);
        assert_eq!(adm.open_from(a), 1);
        let _t4 = adm.admit(a, &act).unwrap();
        assert_eq!(adm.open_from(a), 2);
    }

    #[test]
    fn room_is_made_by_closing_the_oldest_silent_connection() {
        let adm = Admission::new(10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let (busy, quiet1, quiet2) = (Activity::new(), Activity::new(), Activity::new());
        let t_busy = adm.admit(a, &busy).unwrap();
        let t1 = adm.admit(a, &quiet1).unwrap();
        let t2 = adm.admit(a, &quiet2).unwrap();
        let newcomer = adm.admit(a, &Activity::new()).unwrap();
        // The oldest has sent a request (its ticket not told yet): skipped.
        let _flight = busy.begin();
        assert!(adm.shed_oldest(&newcomer));
        // t1 was notified: a stored permit makes `notified()` ready at once.
        {
            let notified = t1.close.notified();
            futures_util::pin_mut!(notified);
            assert!(futures_util::FutureExt::now_or_never(notified.as_mut()).is_some());
        }
        drop(t1);
        t2.served();
        assert!(
            !adm.shed_oldest(&newcomer),
            "nothing silent is left but the newcomer"
        );
        drop((t_busy, t2, newcomer));
        assert_eq!(adm.open_from(a), 0);
    }
}
