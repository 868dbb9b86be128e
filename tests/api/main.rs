//! Integration tests: the real server on a real port over a real store, each
//! test with a fresh database of its own.

mod common;

mod auth;
mod binary;
mod cli;
mod concurrency;
mod console;
mod deadlines;
mod errors;
mod feeds;
mod global;
mod indexes;
mod operations;
mod retention;
mod schemas;
mod snapshots;
mod streams;
mod subscriptions;
mod tags;
mod trace;
mod transfer;
