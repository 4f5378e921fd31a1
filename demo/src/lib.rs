//! The CRM reference workload behind `weft demo`: `crm-mobile` → `crm-conductor`
//! → `crm-salesforce` and `crm-database`, real HTTP services instrumented with
//! the OpenTelemetry SDK (spans and logs through `tracing`), the topology that
//! puts them behind weft's gateway and inside weft's mesh, an open-loop load
//! generator, and the faults they inject so root-cause analysis has something
//! real to find.
//!
//! The `weft` binary supervises the processes; this crate knows what runs
//! where and what each service does.

pub mod control;
pub mod fault;
pub mod load;
pub mod services;
pub mod telemetry;
pub mod topology;

pub use crate::fault::{Fault, FaultError};
pub use crate::services::{CrmService, ServiceOptions};
pub use crate::topology::{Ports, Topology};
