//! Rate limits: the vocabulary ([`kind`]), every provider's headers ([`headers`]), one key's
//! state ([`window`]), the pure pacing decision ([`pacer`]) and token estimates ([`estimate`]).

pub mod estimate;
pub mod headers;
pub mod kind;
pub mod pacer;
pub mod window;
