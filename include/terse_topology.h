/*
 * terse_topology.h — a human-readable summary of the machine terse runs on.
 *
 * Temporary home: this declaration moves into terse.h (it needs no MPI, NCCL or CUDA types).
 * The error convention is terse.h's.
 */
#ifndef TERSE_TOPOLOGY_PUBLIC_H
#define TERSE_TOPOLOGY_PUBLIC_H

#include <stddef.h>

#include "terse.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes a multi-line description of this machine as hwloc sees it into buf (at most len
 * bytes, NUL-terminated): packages, NUMA nodes, cores, hardware threads (PUs), then each GPU
 * and each NIC with its OS device names, model, PCI bus id and the CPUs nearest it. The
 * topology is read afresh on every call (HWLOC_XMLFILE or HWLOC_SYNTHETIC in the environment
 * replace the real machine). 4096 bytes always suffice for up to 8 GPUs and 8 NICs. Not
 * collective; it does not need MPI.
 * Errors: TERSE_ERR_ARG (buf NULL, or len too small: buf is left untouched and the message
 * says how many bytes are needed), TERSE_ERR_BACKEND (hwloc could not load the topology),
 * TERSE_ERR_NOMEM. */
TERSE_API terse_status_t terse_topology_describe(char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* TERSE_TOPOLOGY_PUBLIC_H */
