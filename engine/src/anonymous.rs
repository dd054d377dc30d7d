//! Bounds on connections that have not logged in.
//!
//! The Qt client opens its one connection at start and may sit on the login screen for as
//! long as its user likes, so a short deadline would break it. Instead such connections are
//! bounded by count, in total and per source address (at the cap the longest-idle one is
//! closed to make room), and by a generous idle timeout. Logged-in connections are not
//! tracked here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use corechat_shards::ConnId;

#[derive(Debug)]
pub struct Anonymous {
    max_total: usize,
    max_per_ip: usize,
    conns: HashMap<ConnId, (IpAddr, Instant)>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Anonymous {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Anonymous {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            conns: HashMap::new(),
            per_ip: HashMap::new(),
        }
    }

    /// Tracks a new connection; returns one to close if a cap was reached. Adding one already
    /// tracked only notes activity.
    pub fn add(&mut self, id: ConnId, ip: IpAddr, now: Instant) -> Option<ConnId> {
        if self.conns.contains_key(&id) {
            self.touch(id, now);
            return None;
        }
        let victim = if self.conns.len() >= self.max_total {
            self.longest_idle(|_| true)
        } else if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            self.longest_idle(|a| a == ip)
        } else {
            None
        };
        if let Some(v) = victim {
            self.remove(v);
        }
        self.conns.insert(id, (ip, now));
        *self.per_ip.entry(ip).or_insert(0) += 1;
        victim
    }

    fn longest_idle(&self, pick: impl Fn(IpAddr) -> bool) -> Option<ConnId> {
        self.conns
            .iter()
            .filter(|(_, (ip, _))| pick(*ip))
            .min_by_key(|(id, (_, t))| (*t, **id))
            .map(|(id, _)| *id)
    }

    /// Notes activity on a connection.
    pub fn touch(&mut self, id: ConnId, now: Instant) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.1 = now;
        }
    }

    /// Stops tracking a connection (it logged in or closed).
    pub fn remove(&mut self, id: ConnId) {
        if let Some((ip, _)) = self.conns.remove(&id) {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }

    /// Connections idle for longer than `timeout`.
    pub fn idle(&self, now: Instant, timeout: Duration) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, (_, t))| now.duration_since(*t) >= timeout)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn per_ip_cap_evicts_longest_idle_of_that_address() {
        let t0 = Instant::now();
        let mut a = Anonymous::new(100, 2);
        assert_eq!(a.add(1, ip(1), t0), None);
        assert_eq!(a.add(2, ip(1), t0 + Duration::from_secs(1)), None);
        assert_eq!(a.add(3, ip(2), t0), None);
        a.touch(1, t0 + Duration::from_secs(5));
        assert_eq!(a.add(4, ip(1), t0 + Duration::from_secs(6)), Some(2));
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn total_cap_evicts_longest_idle_overall() {
        let t0 = Instant::now();
        let mut a = Anonymous::new(2, 10);
        a.add(1, ip(1), t0 + Duration::from_secs(1));
        a.add(2, ip(2), t0);
        assert_eq!(a.add(3, ip(3), t0 + Duration::from_secs(2)), Some(2));
        assert_eq!(a.add(3, ip(3), t0), None, "already tracked");
        assert_eq!(a.len(), 2);
        a.remove(1);
        a.remove(3);
        assert!(a.is_empty());
        assert!(a.per_ip.is_empty());
    }

    #[test]
    fn idle_timeout() {
        let t0 = Instant::now();
        let mut a = Anonymous::new(10, 10);
        a.add(1, ip(1), t0);
        a.add(2, ip(1), t0 + Duration::from_secs(50));
        assert_eq!(
            a.idle(t0 + Duration::from_secs(60), Duration::from_secs(60)),
            vec![1]
        );
    }
}
