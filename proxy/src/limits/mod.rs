//! What spillway knows about its targets and keys, and the decisions made from it: the
//! vocabulary of limits ([`kind`]), every provider's headers ([`headers`]), one key's windows
//! ([`window`]) and its in-flight allowance while requests per minute are unknown
//! ([`concurrency`]), a target's circuit ([`circuit`]), a key's standing with its provider
//! ([`key_health`]), token estimates ([`estimate`]), the pure pacing decision ([`pacer`]), and
//! the [`ledger`] through which the router reads and changes all of it, kept in memory by
//! [`local`].

pub mod circuit;
pub mod concurrency;
pub mod estimate;
pub mod headers;
pub mod key_health;
pub mod kind;
pub mod ledger;
pub mod local;
pub mod pacer;
pub mod quota;
pub mod window;
