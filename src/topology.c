/* Machine topology through hwloc.
 *
 * hwloc lists I/O devices as OS devices under the PCI function they belong to, and one
 * physical device often has several: an NVIDIA GPU is cuda0 (CUDA plugin), nvml0 (NVML) and
 * card1 (Linux DRM); an InfiniBand port is mlx5_0 (OpenFabrics) and ib0 (network). Counting
 * OS devices would count such a GPU three times, so a device here is a PCI function with at
 * least one OS device of the class (GPU: GPU or COPROC; NIC: NETWORK or OPENFABRICS), and an
 * OS device without a PCI parent (hwloc built without PCI support) is a device of its own. */
#include <hwloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "terse_topology.h"
#include "topology.h"

typedef enum { DEVICE_NONE, DEVICE_GPU, DEVICE_NIC } device_class_t;

static device_class_t osdev_class(hwloc_obj_t obj)
{
    if (obj->type != HWLOC_OBJ_OS_DEVICE) return DEVICE_NONE;
    switch (obj->attr->osdev.type) {
    case HWLOC_OBJ_OSDEV_GPU:
    case HWLOC_OBJ_OSDEV_COPROC: return DEVICE_GPU;
    case HWLOC_OBJ_OSDEV_NETWORK:
    case HWLOC_OBJ_OSDEV_OPENFABRICS:
        /* Loopback moves no bytes between machines. */
        return obj->name && strcmp(obj->name, "lo") == 0 ? DEVICE_NONE : DEVICE_NIC;
    default: return DEVICE_NONE;
    }
}

/* The PCI function an OS device belongs to, or NULL. */
static hwloc_obj_t osdev_pci(hwloc_obj_t obj)
{
    return obj->parent && obj->parent->type == HWLOC_OBJ_PCI_DEVICE ? obj->parent : NULL;
}

/* Whether obj is the first OS device of class cls under its PCI function, i.e. the one that
 * stands for the physical device (orphans always stand for themselves). */
static int osdev_is_first_of_class(hwloc_obj_t obj, device_class_t cls)
{
    hwloc_obj_t pci = osdev_pci(obj);
    if (!pci) return 1;
    for (hwloc_obj_t sib = pci->io_first_child; sib && sib != obj; sib = sib->next_sibling)
        if (osdev_class(sib) == cls) return 0;
    return 1;
}

/* Appends src to dst (capacity cap), with a ',' before it unless dst is empty; truncates. */
static void append_name(char *dst, size_t cap, const char *src)
{
    size_t used = strlen(dst);
    if (used + 1 >= cap) return;
    snprintf(dst + used, cap - used, "%s%s", used ? "," : "", src);
}

static void device_describe(hwloc_topology_t topo, hwloc_obj_t obj, device_class_t cls,
                            topology_device_t *dev)
{
    hwloc_obj_t pci = osdev_pci(obj);
    const char *gpu_model = NULL;

    memset(dev, 0, sizeof *dev);
    if (pci) {
        for (hwloc_obj_t sib = pci->io_first_child; sib; sib = sib->next_sibling) {
            if (osdev_class(sib) != cls) continue;
            append_name(dev->names, sizeof dev->names, sib->name ? sib->name : "?");
            if (!gpu_model) gpu_model = hwloc_obj_get_info_by_name(sib, "GPUModel");
        }
        snprintf(dev->pci, sizeof dev->pci, "%04x:%02x:%02x.%01x",
                 (unsigned)pci->attr->pcidev.domain, (unsigned)pci->attr->pcidev.bus,
                 (unsigned)pci->attr->pcidev.dev, (unsigned)pci->attr->pcidev.func);
    } else {
        append_name(dev->names, sizeof dev->names, obj->name ? obj->name : "?");
        gpu_model = hwloc_obj_get_info_by_name(obj, "GPUModel");
    }

    /* The runtime's own name (CUDA, NVML, ROCm) is the one users know; the PCI ID database
     * name is the fallback, and is absent when hwloc found no pci.ids. */
    if (gpu_model) {
        snprintf(dev->model, sizeof dev->model, "%s", gpu_model);
    } else if (pci) {
        const char *vendor = hwloc_obj_get_info_by_name(pci, "PCIVendor");
        const char *device = hwloc_obj_get_info_by_name(pci, "PCIDevice");
        if (vendor && device)
            snprintf(dev->model, sizeof dev->model, "%s %s", vendor, device);
        else if (device)
            snprintf(dev->model, sizeof dev->model, "%s", device);
        else
            snprintf(dev->model, sizeof dev->model, "device %04x:%04x",
                     (unsigned)pci->attr->pcidev.vendor_id,
                     (unsigned)pci->attr->pcidev.device_id);
    }

    hwloc_obj_t near = hwloc_get_non_io_ancestor_obj(topo, obj);
    if (near && near->cpuset)
        hwloc_bitmap_list_snprintf(dev->cpuset, sizeof dev->cpuset, near->cpuset);
}

static int count_type(hwloc_topology_t topo, hwloc_obj_type_t type)
{
    int n = hwloc_get_nbobjs_by_type(topo, type);
    return n > 0 ? n : 0; /* -1: at several depths, which only Group objects can be */
}

terse_status_t topology_summary(topology_summary_t *out)
{
    hwloc_topology_t topo;
    topology_summary_t s;
    unsigned api = hwloc_get_api_version();

    if (!out) return terse_error(TERSE_ERR_ARG, "topology_summary: out is NULL");

    /* The ABI changes between hwloc major versions (hwloc's documented check). */
    if ((api >> 16) != (HWLOC_API_VERSION >> 16))
        return terse_error(TERSE_ERR_BACKEND,
                           "hwloc library API %u.%u does not match the %u.%u that terse was "
                           "built with; rebuild terse against the installed hwloc",
                           api >> 16, (api >> 8) & 0xff, HWLOC_API_VERSION >> 16,
                           (HWLOC_API_VERSION >> 8) & 0xff);

    if (hwloc_topology_init(&topo) != 0)
        return terse_error(TERSE_ERR_NOMEM, "hwloc_topology_init failed: out of memory");
    if (hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT) != 0) {
        hwloc_topology_destroy(topo);
        return terse_error(TERSE_ERR_BACKEND,
                           "hwloc_topology_set_io_types_filter failed; is hwloc older than 2.0?");
    }
    if (hwloc_topology_load(topo) != 0) {
        hwloc_topology_destroy(topo);
        return terse_error(TERSE_ERR_BACKEND,
                           "hwloc could not load the machine topology; check HWLOC_XMLFILE and "
                           "HWLOC_SYNTHETIC in the environment, and run lstopo to see why");
    }

    memset(&s, 0, sizeof s);
    s.hwloc_api = api;
    s.packages = count_type(topo, HWLOC_OBJ_PACKAGE);
    s.numa_nodes = count_type(topo, HWLOC_OBJ_NUMANODE);
    s.cores = count_type(topo, HWLOC_OBJ_CORE);
    s.pus = count_type(topo, HWLOC_OBJ_PU);

    for (hwloc_obj_t obj = hwloc_get_next_osdev(topo, NULL); obj;
         obj = hwloc_get_next_osdev(topo, obj)) {
        device_class_t cls = osdev_class(obj);
        if (cls == DEVICE_NONE || !osdev_is_first_of_class(obj, cls)) continue;
        int *n = cls == DEVICE_GPU ? &s.gpus : &s.nics;
        topology_device_t *table = cls == DEVICE_GPU ? s.gpu : s.nic;
        if (*n < TOPOLOGY_MAX_DEVICES) device_describe(topo, obj, cls, &table[*n]);
        (*n)++;
    }

    hwloc_topology_destroy(topo);
    *out = s;
    return TERSE_OK;
}

/* snprintf into a growing text that keeps counting past the end of the buffer, so that one
 * formatting pass both writes what fits and says how much the whole needs. */
typedef struct {
    char *buf;
    size_t len, need;
} text_t;

static void text_printf(text_t *t, const char *fmt, ...) TERSE_PRINTF(2, 3);

static void text_printf(text_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = t->need < t->len ? vsnprintf(t->buf + t->need, t->len - t->need, fmt, ap)
                             : vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0) t->need += (size_t)n;
}

static void format_devices(text_t *t, const char *what, int n, const topology_device_t *dev)
{
    text_printf(t, "  %-11s %d\n", what, n);
    for (int i = 0; i < n && i < TOPOLOGY_MAX_DEVICES; i++) {
        text_printf(t, "    %s:", dev[i].names);
        if (dev[i].model[0]) text_printf(t, " %s", dev[i].model);
        if (dev[i].pci[0]) text_printf(t, " at PCI %s", dev[i].pci);
        text_printf(t, "%s near CPUs %s\n", dev[i].model[0] || dev[i].pci[0] ? "," : "",
                    dev[i].cpuset[0] ? dev[i].cpuset : "unknown");
    }
    if (n > TOPOLOGY_MAX_DEVICES)
        text_printf(t, "    ... and %d more\n", n - TOPOLOGY_MAX_DEVICES);
}

size_t topology_format(const topology_summary_t *s, char *buf, size_t len)
{
    text_t t = {buf, buf ? len : 0, 0};
    if (t.len) buf[0] = '\0';
    text_printf(&t, "topology (hwloc API %u.%u):\n", s->hwloc_api >> 16,
                (s->hwloc_api >> 8) & 0xff);
    text_printf(&t, "  %-11s %d\n", "packages:", s->packages);
    text_printf(&t, "  %-11s %d\n", "NUMA nodes:", s->numa_nodes);
    text_printf(&t, "  %-11s %d\n", "cores:", s->cores);
    text_printf(&t, "  %-11s %d\n", "PUs:", s->pus);
    format_devices(&t, "GPUs:", s->gpus, s->gpu);
    format_devices(&t, "NICs:", s->nics, s->nic);
    return t.need;
}

terse_status_t topology_describe(char *buf, size_t len)
{
    topology_summary_t s;

    if (!buf)
        return terse_error(TERSE_ERR_ARG,
                           "terse_topology_describe: buf is NULL; pass a buffer of 4096 bytes");
    TERSE_CHECK(topology_summary(&s));
    size_t need = topology_format(&s, NULL, 0) + 1;
    if (len < need)
        return terse_error(TERSE_ERR_ARG,
                           "terse_topology_describe: a buffer of %zu bytes is too small for this "
                           "machine's description, which needs %zu bytes",
                           len, need);
    topology_format(&s, buf, len);
    return TERSE_OK;
}

TERSE_API terse_status_t terse_topology_describe(char *buf, size_t len)
{
    terse_error_clear();
    return topology_describe(buf, len);
}
