#![allow(dead_code)]
pub mod data;
pub mod many;
pub mod node;
pub mod s3;
pub mod scylla;
pub mod stores;
