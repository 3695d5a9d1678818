//! A sans-I/O circuit breaker.
