//! `device::keep_candle_pool_on_caller` sets candle's pool size once and leaves a user's choice alone (its own test
//! binary: it changes the process environment).

use backbones::device::{keep_candle_pool_on_caller, CANDLE_POOL_ENV};

#[test]
fn sets_the_pool_size_only_when_the_user_did_not() {
    std::env::remove_var(CANDLE_POOL_ENV);
    assert!(keep_candle_pool_on_caller());
    assert_eq!(std::env::var(CANDLE_POOL_ENV).unwrap(), "1");
    std::env::set_var(CANDLE_POOL_ENV, "2");
    assert!(!keep_candle_pool_on_caller());
    assert_eq!(std::env::var(CANDLE_POOL_ENV).unwrap(), "2");
}
