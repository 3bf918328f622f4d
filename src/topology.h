/* Machine topology through hwloc: what terse-info prints and what bind=auto and hier=auto
 * will consult. Everything here comes from hwloc; terse never parses /proc or /sys itself, so
 * HWLOC_XMLFILE and HWLOC_SYNTHETIC in the environment stand in for the real machine (that is
 * how the unit tests give it a fixed topology). */
#ifndef TERSE_TOPOLOGY_H
#define TERSE_TOPOLOGY_H

#include <stddef.h>

#include "terse.h"

/* How many GPUs and NICs are described by name; more are counted but not named. */
#define TOPOLOGY_MAX_DEVICES 8

/* One physical device. hwloc may show it as several OS devices (an NVIDIA GPU as cuda0,
 * nvml0 and card1; an InfiniBand port as mlx5_0 and ib0): those sharing one PCI function
 * are one device here, their names joined with ','. */
typedef struct {
    char names[64];   /* OS device names, e.g. "cuda0,card1", "eth0"                        */
    char model[64];   /* e.g. "NVIDIA H100 80GB HBM3": the GPU model, else the PCI names,
                       * else "device VVVV:DDDD" (PCI vendor:device ids)                */
    char pci[16];     /* PCI bus id "0000:17:00.0", or "" when hwloc has no PCI parent      */
    char cpuset[64];  /* the CPUs nearest the device, hwloc list syntax ("0-15,32-47")      */
} topology_device_t;

typedef struct {
    unsigned hwloc_api;   /* hwloc_get_api_version() of the library in use                  */
    int packages, numa_nodes, cores, pus;
    int gpus;             /* physical GPUs: PCI functions with a GPU or COPROC OS device    */
    int nics;             /* physical NICs: PCI functions with a NETWORK or OPENFABRICS OS
                           * device other than "lo"                                         */
    topology_device_t gpu[TOPOLOGY_MAX_DEVICES];  /* the first min(gpus, MAX) GPUs          */
    topology_device_t nic[TOPOLOGY_MAX_DEVICES];  /* the first min(nics, MAX) NICs          */
} topology_summary_t;

/* Loads the topology of this machine (with its important I/O devices), counts its objects
 * and fills *out; the hwloc topology is freed before returning.
 * Errors: TERSE_ERR_ARG (out NULL), TERSE_ERR_BACKEND (hwloc failed or is an incompatible
 * version), TERSE_ERR_NOMEM. */
terse_status_t topology_summary(topology_summary_t *out);

/* Formats a summary as a multi-line human description into buf (at most len bytes,
 * NUL-terminated). Returns the length the whole description needs, excluding the NUL, like
 * snprintf; buf may be NULL when len is 0. Never fails. */
size_t topology_format(const topology_summary_t *s, char *buf, size_t len);

/* topology_summary() then topology_format() into buf; writes buf only if it all fits.
 * Errors: those of topology_summary(), TERSE_ERR_ARG (buf NULL, or len too small: the
 * message says how many bytes are needed). */
terse_status_t topology_describe(char *buf, size_t len);

#endif
