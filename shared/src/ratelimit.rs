//! Fleet-wide rate limiting: one atomic Redis script shared by every analyze worker, plus governor smoothing per process.
