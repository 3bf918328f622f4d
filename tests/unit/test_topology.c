/* Topology discovery: the real machine for what every machine has (a core, a package), and
 * hwloc's synthetic and XML topologies for exact counts and for the GPUs and NICs this
 * machine may lack. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "terse_topology.h"
#include "topology.h"

/* hwloc reads HWLOC_SYNTHETIC and HWLOC_XMLFILE at load time, but ignores them while
 * HWLOC_COMPONENTS is set: load_fake() sets var, clears HWLOC_COMPONENTS for one
 * topology_summary(), then puts both back as they were (for CK_FORK=no runs). */
static void env_restore(const char *name, char *saved)
{
    if (saved) setenv(name, saved, 1);
    else unsetenv(name);
    free(saved);
}

static char *env_save(const char *name)
{
    const char *v = getenv(name);
    return v ? strdup(v) : NULL;
}

static terse_status_t load_fake(const char *var, const char *value, topology_summary_t *s)
{
    char *saved_var = env_save(var), *saved_components = env_save("HWLOC_COMPONENTS");
    unsetenv("HWLOC_COMPONENTS");
    setenv(var, value, 1);
    terse_status_t st = topology_summary(s);
    env_restore(var, saved_var);
    env_restore("HWLOC_COMPONENTS", saved_components);
    return st;
}

START_TEST(describe_names_cores_with_a_positive_count)
{
    char buf[4096];
    ck_assert_int_eq(terse_topology_describe(buf, sizeof buf), TERSE_OK);
    const char *line = strstr(buf, "cores:");
    ck_assert_msg(line != NULL, "no 'cores:' in description:\n%s", buf);
    ck_assert_int_gt(atoi(line + strlen("cores:")), 0);
    ck_assert_ptr_nonnull(strstr(buf, "PUs:"));
    ck_assert_ptr_nonnull(strstr(buf, "GPUs:"));
    ck_assert_ptr_nonnull(strstr(buf, "NICs:"));
}
END_TEST

START_TEST(describe_rejects_small_buffer_and_says_the_size_needed)
{
    char full[4096], small[16];
    ck_assert_int_eq(terse_topology_describe(full, sizeof full), TERSE_OK);
    size_t need = strlen(full) + 1;

    memset(small, 'x', sizeof small);
    ck_assert_int_eq(terse_topology_describe(small, sizeof small), TERSE_ERR_ARG);
    for (size_t i = 0; i < sizeof small; i++) ck_assert_int_eq(small[i], 'x'); /* untouched */
    char expect[64];
    snprintf(expect, sizeof expect, "needs %zu bytes", need);
    ck_assert_msg(strstr(terse_last_error(), expect) != NULL, "message '%s' lacks '%s'",
                  terse_last_error(), expect);

    /* One byte short fails; exactly enough succeeds. */
    ck_assert_int_eq(terse_topology_describe(full, need - 1), TERSE_ERR_ARG);
    ck_assert_int_eq(terse_topology_describe(full, need), TERSE_OK);
    ck_assert_uint_eq(strlen(full), need - 1);
    ck_assert_int_eq(terse_topology_describe(full, 0), TERSE_ERR_ARG);
}
END_TEST

START_TEST(describe_rejects_null_buffer)
{
    ck_assert_int_eq(terse_topology_describe(NULL, 4096), TERSE_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(terse_last_error(), "buf is NULL"));
    ck_assert_int_eq(topology_summary(NULL), TERSE_ERR_ARG);
}
END_TEST

START_TEST(summary_of_this_machine_has_a_package_and_a_core)
{
    topology_summary_t s;
    ck_assert_int_eq(topology_summary(&s), TERSE_OK);
    ck_assert_int_ge(s.packages, 1);
    ck_assert_int_ge(s.numa_nodes, 1);
    ck_assert_int_ge(s.cores, 1);
    ck_assert_int_ge(s.pus, s.cores);
    ck_assert_int_ge(s.gpus, 0);
    ck_assert_int_ge(s.nics, 0);
    for (int i = 0; i < s.nics && i < TOPOLOGY_MAX_DEVICES; i++)
        ck_assert_str_ne(s.nic[i].names, "lo");
}
END_TEST

START_TEST(summary_counts_a_synthetic_topology_exactly)
{
    topology_summary_t s;
    ck_assert_int_eq(load_fake("HWLOC_SYNTHETIC", "pack:2 numa:1 core:3 pu:2", &s), TERSE_OK);
    ck_assert_int_eq(s.packages, 2);
    ck_assert_int_eq(s.numa_nodes, 2);
    ck_assert_int_eq(s.cores, 6);
    ck_assert_int_eq(s.pus, 12);
    ck_assert_int_eq(s.gpus, 0);
    ck_assert_int_eq(s.nics, 0);
}
END_TEST

/* Two packages of one core and two PUs each. On package 1's side: an NVIDIA GPU seen as both
 * cuda0 (COPROC) and card1 (DRM GPU), an InfiniBand HCA seen as mlx5_0 and ib0, and an
 * Ethernet NIC eth0. Loopback hangs off the machine. So: 1 GPU and 2 NICs. */
static const char io_xml[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!DOCTYPE topology SYSTEM \"hwloc2.dtd\">\n"
    "<topology version=\"2.0\">\n"
    " <object type=\"Machine\" os_index=\"0\" cpuset=\"0xf\" complete_cpuset=\"0xf\""
    "  allowed_cpuset=\"0xf\" nodeset=\"0x1\" complete_nodeset=\"0x1\" allowed_nodeset=\"0x1\""
    "  gp_index=\"1\">\n"
    "  <object type=\"NUMANode\" os_index=\"0\" cpuset=\"0xf\" complete_cpuset=\"0xf\""
    "   nodeset=\"0x1\" complete_nodeset=\"0x1\" gp_index=\"2\" local_memory=\"1073741824\"/>\n"
    "  <object type=\"Package\" os_index=\"0\" cpuset=\"0x3\" complete_cpuset=\"0x3\""
    "   nodeset=\"0x1\" complete_nodeset=\"0x1\" gp_index=\"3\">\n"
    "   <object type=\"Core\" os_index=\"0\" cpuset=\"0x3\" complete_cpuset=\"0x3\""
    "    nodeset=\"0x1\" complete_nodeset=\"0x1\" gp_index=\"4\">\n"
    "    <object type=\"PU\" os_index=\"0\" cpuset=\"0x1\" complete_cpuset=\"0x1\""
    "     nodeset=\"0x1\" complete_nodeset=\"0x1\" gp_index=\"5\"/>\n"
    "    <object type=\"PU\" os_index=\"1\" cpuset=\"0x2\" complete_cpuset=\"0x2\""
    "     nodeset=\"0x1\" complete_nodeset=\"0x1\" gp_index=\"6\"/>\n"
    "   </object>\n"
    "  </object>\n"
    "  <object type=\"Package\" os_index=\"1\" cpuset=\"0xc\" complete_cpuset=\"0xc\""
    "   nodeset=\"0x1\" complete_nodeset=\"0x1\" gp_index=\"7\">\n"
    "   <object type=\"Core\" os_index=\"1\" cpuset=\"0xc\" complete_cpuset=\"0xc\""
    "    nodeset=\"0x1\" complete_nodeset=\"0x1\" gp_index=\"8\">\n"
    "    <object type=\"PU\" os_index=\"2\" cpuset=\"0x4\" complete_cpuset=\"0x4\""
    "     nodeset=\"0x1\" complete_nodeset=\"0x1\" gp_index=\"9\"/>\n"
    "    <object type=\"PU\" os_index=\"3\" cpuset=\"0x8\" complete_cpuset=\"0x8\""
    "     nodeset=\"0x1\" complete_nodeset=\"0x1\" gp_index=\"10\"/>\n"
    "   </object>\n"
    "   <object type=\"Bridge\" gp_index=\"11\" bridge_type=\"0-1\" depth=\"0\""
    "    bridge_pci=\"0000:[17-19]\">\n"
    "    <object type=\"PCIDev\" gp_index=\"12\" pci_busid=\"0000:17:00.0\""
    "     pci_type=\"0302 [10de:2330] [10de:16c1] a1\" pci_link_speed=\"0.000000\">\n"
    "     <object type=\"OSDev\" gp_index=\"13\" name=\"cuda0\" osdev_type=\"5\">\n"
    "      <info name=\"CoProcType\" value=\"CUDA\"/>\n"
    "      <info name=\"GPUModel\" value=\"NVIDIA H100 80GB HBM3\"/>\n"
    "     </object>\n"
    "     <object type=\"OSDev\" gp_index=\"14\" name=\"card1\" osdev_type=\"1\"/>\n"
    "    </object>\n"
    "    <object type=\"PCIDev\" gp_index=\"15\" pci_busid=\"0000:18:00.0\""
    "     pci_type=\"0207 [15b3:101b] [15b3:0007] 00\" pci_link_speed=\"0.000000\">\n"
    "     <object type=\"OSDev\" gp_index=\"16\" name=\"mlx5_0\" osdev_type=\"3\"/>\n"
    "     <object type=\"OSDev\" gp_index=\"17\" name=\"ib0\" osdev_type=\"2\"/>\n"
    "    </object>\n"
    "    <object type=\"PCIDev\" gp_index=\"18\" pci_busid=\"0000:19:00.0\""
    "     pci_type=\"0200 [8086:1572] [8086:0000] 01\" pci_link_speed=\"0.000000\">\n"
    "     <info name=\"PCIVendor\" value=\"Intel Corporation\"/>\n"
    "     <info name=\"PCIDevice\" value=\"Ethernet Controller X710\"/>\n"
    "     <object type=\"OSDev\" gp_index=\"19\" name=\"eth0\" osdev_type=\"2\"/>\n"
    "    </object>\n"
    "   </object>\n"
    "  </object>\n"
    "  <object type=\"OSDev\" gp_index=\"20\" name=\"lo\" osdev_type=\"2\"/>\n"
    " </object>\n"
    "</topology>\n";

START_TEST(summary_counts_one_gpu_per_pci_function_and_skips_loopback)
{
    char path[] = "/tmp/terse_topology_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, io_xml, sizeof io_xml - 1), (ssize_t)(sizeof io_xml - 1));
    close(fd);

    topology_summary_t s;
    terse_status_t st = load_fake("HWLOC_XMLFILE", path, &s);
    unlink(path);
    ck_assert_msg(st == TERSE_OK, "%s", terse_last_error());

    ck_assert_int_eq(s.packages, 2);
    ck_assert_int_eq(s.cores, 2);
    ck_assert_int_eq(s.pus, 4);
    ck_assert_int_eq(s.gpus, 1);
    ck_assert_str_eq(s.gpu[0].names, "cuda0,card1");
    ck_assert_str_eq(s.gpu[0].model, "NVIDIA H100 80GB HBM3");
    ck_assert_str_eq(s.gpu[0].pci, "0000:17:00.0");
    ck_assert_str_eq(s.gpu[0].cpuset, "2-3");
    ck_assert_int_eq(s.nics, 2);
    ck_assert_str_eq(s.nic[0].names, "mlx5_0,ib0");
    ck_assert_str_eq(s.nic[0].model, "device 15b3:101b");
    ck_assert_str_eq(s.nic[1].names, "eth0");
    ck_assert_str_eq(s.nic[1].model, "Intel Corporation Ethernet Controller X710");
    ck_assert_str_eq(s.nic[1].cpuset, "2-3");

    char buf[4096];
    ck_assert_uint_lt(topology_format(&s, buf, sizeof buf), sizeof buf);
    ck_assert_ptr_nonnull(
        strstr(buf, "cuda0,card1: NVIDIA H100 80GB HBM3 at PCI 0000:17:00.0, near CPUs 2-3"));
}
END_TEST

/* The public header promises that 4096 bytes always suffice: check the longest description
 * a summary can produce. */
START_TEST(format_of_the_largest_summary_fits_4096_bytes)
{
    topology_summary_t s;
    memset(&s, 0, sizeof s);
    s.hwloc_api = 0xffffffffu;
    s.packages = s.numa_nodes = s.cores = s.pus = INT_MIN; /* the most digits */
    s.gpus = s.nics = INT_MAX;                               /* "... and N more" */
    topology_device_t *tables[2] = {s.gpu, s.nic};
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < TOPOLOGY_MAX_DEVICES; i++) {
            topology_device_t *d = &tables[t][i];
            memset(d->names, 'n', sizeof d->names - 1);
            memset(d->model, 'm', sizeof d->model - 1);
            memset(d->pci, 'p', sizeof d->pci - 1);
            memset(d->cpuset, 'c', sizeof d->cpuset - 1);
        }
    size_t need = topology_format(&s, NULL, 0);
    ck_assert_uint_lt(need + 1, 4096);

    char buf[4096];
    ck_assert_uint_eq(topology_format(&s, buf, sizeof buf), need);
    ck_assert_uint_eq(strlen(buf), need);

    /* Truncation keeps counting and still terminates. */
    char tiny[10];
    ck_assert_uint_eq(topology_format(&s, tiny, sizeof tiny), need);
    ck_assert_uint_eq(strlen(tiny), sizeof tiny - 1);
}
END_TEST

static Suite *topology_suite(void)
{
    Suite *s = suite_create("topology");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30); /* I/O discovery walks PCI; slow machines take a while */
    tcase_add_test(tc, describe_names_cores_with_a_positive_count);
    tcase_add_test(tc, describe_rejects_small_buffer_and_says_the_size_needed);
    tcase_add_test(tc, describe_rejects_null_buffer);
    tcase_add_test(tc, summary_of_this_machine_has_a_package_and_a_core);
    tcase_add_test(tc, summary_counts_a_synthetic_topology_exactly);
    tcase_add_test(tc, summary_counts_one_gpu_per_pci_function_and_skips_loopback);
    tcase_add_test(tc, format_of_the_largest_summary_fits_4096_bytes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(topology_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
