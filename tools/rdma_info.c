/* rdma_info.c: tq-rdma-info: the transports built in and the RDMA devices, UCX
 * resources and libfabric providers this machine offers them. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tq/tq.h"
#include "transport_registry.h"
#include "util/log.h"

#ifdef TQ_HAVE_VERBS
#include <endian.h>
#include <infiniband/verbs.h>
#endif
#ifdef TQ_HAVE_UCX
#include <ucp/api/ucp.h>
#include <uct/api/uct.h>
#endif
#ifdef TQ_HAVE_OFI
#include <rdma/fabric.h>
#include <rdma/fi_errno.h>
#endif

#define SYSFS_IB "/sys/class/infiniband"

/* The libraries this tool reads itself, as tools/CMakeLists.txt chose them
 * from the TQ_WITH_* options (libtqrdma keeps the transports' definitions). */
#ifdef TQ_HAVE_VERBS
#define BUILT_VERBS true
#else
#define BUILT_VERBS false
#endif
#ifdef TQ_HAVE_UCX
#define BUILT_UCX true
#else
#define BUILT_UCX false
#endif
#ifdef TQ_HAVE_OFI
#define BUILT_OFI true
#else
#define BUILT_OFI false
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tq-rdma-info [--json]\n"
            "What this machine offers tqrdma: the transports built in and whether each\n"
            "starts here; RDMA devices with their ports, link layer, GIDs and state\n"
            "(libibverbs); UCX's transports and devices; libfabric's providers.\n"
            "--json prints one JSON object instead of the report.\n"
            "Exit status: 0 (also with no RDMA device), 1 when it cannot run, 2 for a bad\n"
            "command line.\n");
}

/* ---- transports built in ----------------------------------------------- */

/* One line a transport or its library printed, without the log prefix: ours
 * ("2026-01-02T03:04:05.000006Z warn  ucx: ", *ours_p set) or UCX's
 * ("[1795252856.760879] [host:1:0]  ucp_context.c:1014 UCX  WARN  ..."). */
static const char *strip_prefix(const char *line, bool *ours_p)
{
    const char *z = strstr(line, "Z ");
    *ours_p = z != NULL && z - line == 26 && (z = strstr(z, ": ")) != NULL;
    if (*ours_p)
        return z + 2;
    const char *ucx = line[0] == '[' ? strstr(line, " UCX ") : NULL;
    return ucx != NULL ? ucx + 1 : line;
}

/* Start and stop one transport. What it and its library print meanwhile (UCX
 * logs to stdout) goes to a scratch file: our own last line is the reason it
 * cannot start here, and every line is kept as "messages". */
static cJSON *probe_transport(const tq_transport_ops *ops)
{
    fflush(stdout);
    fflush(stderr);
    FILE *scratch = tmpfile();
    int saved_out = scratch != NULL ? dup(STDOUT_FILENO) : -1;
    int saved_err = scratch != NULL ? dup(STDERR_FILENO) : -1;
    bool caught = saved_out >= 0 && saved_err >= 0 &&
                  dup2(fileno(scratch), STDOUT_FILENO) >= 0 &&
                  dup2(fileno(scratch), STDERR_FILENO) >= 0;
    tq_transport *tr = NULL;
    int rc = ops->init(NULL, &tr);
    if (rc == TQ_OK)
        ops->fini(tr);
    fflush(stdout);
    fflush(stderr);
    if (saved_out >= 0) {
        dup2(saved_out, STDOUT_FILENO);
        close(saved_out);
    }
    if (saved_err >= 0) {
        dup2(saved_err, STDERR_FILENO);
        close(saved_err);
    }

    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "name", ops->name);
    cJSON_AddBoolToObject(t, "usable", rc == TQ_OK);
    if (rc != TQ_OK)
        cJSON_AddStringToObject(t, "status", tq_status_string(rc));
    cJSON *messages = cJSON_AddArrayToObject(t, "messages");
    char line[1024], reason[1024] = "";
    if (caught) {
        rewind(scratch);
        while (fgets(line, sizeof(line), scratch) != NULL) {
            line[strcspn(line, "\n")] = '\0';
            bool ours;
            const char *text = strip_prefix(line, &ours);
            if (text[0] == '\0')
                continue;
            cJSON_AddItemToArray(messages, cJSON_CreateString(text));
            if (ours)
                snprintf(reason, sizeof(reason), "%s", text);
        }
    }
    if (scratch != NULL)
        fclose(scratch);
    if (rc != TQ_OK && reason[0] != '\0')
        cJSON_AddStringToObject(t, "reason", reason);
    return t;
}

static void info_transports(cJSON *doc)
{
    cJSON *arr = cJSON_AddArrayToObject(doc, "transports");
    for (size_t i = 0; tq__transports[i] != NULL; i++)
        cJSON_AddItemToArray(arr, probe_transport(tq__transports[i]));
}

/* ---- RDMA devices (libibverbs) ------------------------------------------ */

/* Entries in /sys/class/infiniband, or -1 when it does not exist. */
static int sysfs_ib_count(void)
{
    DIR *d = opendir(SYSFS_IB);
    if (d == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

#ifdef TQ_HAVE_VERBS
static const char no_device_note[] =
    "No RDMA device found: this machine has no InfiniBand/RoCE adapter or soft-RoCE (rxe) device.";

static const char *transport_str(enum ibv_transport_type t)
{
    switch (t) {
    case IBV_TRANSPORT_IB: return "InfiniBand";
    case IBV_TRANSPORT_IWARP: return "iWARP";
    case IBV_TRANSPORT_USNIC: return "usNIC";
    case IBV_TRANSPORT_USNIC_UDP: return "usNIC UDP";
    default: return "unknown";
    }
}

static const char *link_layer_str(uint8_t ll)
{
    switch (ll) {
    case IBV_LINK_LAYER_INFINIBAND: return "InfiniBand";
    case IBV_LINK_LAYER_ETHERNET: return "Ethernet";
    default: return "unspecified"; /* older kernels report InfiniBand ports so */
    }
}

/* Physical port states as numbered by the InfiniBand specification. */
static const char *phys_state_str(uint8_t s)
{
    static const char *const names[] = {"no state change", "Sleep", "Polling", "Disabled",
                                        "PortConfigurationTraining", "LinkUp",
                                        "LinkErrorRecovery", "PhyTest"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

/* Lane speed (the specification's encoding) with its nominal data rate. */
static const char *speed_str(uint8_t speed, double *gbps_p)
{
    static const struct { uint8_t code; const char *name; double gbps; } speeds[] = {
        {1, "SDR", 2.5},    {2, "DDR", 5},     {4, "QDR", 10},   {8, "FDR10", 10},
        {16, "FDR", 14},    {32, "EDR", 25},   {64, "HDR", 50},  {128, "NDR", 100},
    };
    for (size_t i = 0; i < sizeof(speeds) / sizeof(speeds[0]); i++)
        if (speeds[i].code == speed) {
            *gbps_p = speeds[i].gbps;
            return speeds[i].name;
        }
    *gbps_p = 0;
    return "unknown";
}

static int width_lanes(uint8_t width)
{
    switch (width) {
    case 1: return 1;
    case 2: return 4;
    case 4: return 8;
    case 8: return 12;
    case 16: return 2;
    default: return 0;
    }
}

static const char *gid_type_str(uint32_t t)
{
    switch (t) {
    case IBV_GID_TYPE_IB: return "IB";
    case IBV_GID_TYPE_ROCE_V1: return "RoCE v1";
    case IBV_GID_TYPE_ROCE_V2: return "RoCE v2";
    default: return "unknown";
    }
}

/* Every valid GID of the device (rdma-core reads sysfs itself on kernels
 * without the query ioctl), sorted into its port's "gids" array. */
static void add_gids(struct ibv_context *ctx, size_t max, cJSON *ports)
{
    struct ibv_gid_entry *e = calloc(max ? max : 1, sizeof(*e));
    ssize_t n = e != NULL ? ibv_query_gid_table(ctx, e, max, 0) : -ENOMEM;
    if (n < 0) {
        cJSON *p;
        cJSON_ArrayForEach(p, ports)
            cJSON_AddStringToObject(p, "gids_error", strerror((int)-n));
        free(e);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        cJSON *port = cJSON_GetArrayItem(ports, (int)e[i].port_num - 1);
        cJSON *gids = cJSON_GetObjectItemCaseSensitive(port, "gids");
        if (gids == NULL)
            continue;
        char text[INET6_ADDRSTRLEN], ifname[IF_NAMESIZE] = "";
        inet_ntop(AF_INET6, e[i].gid.raw, text, sizeof(text));
        if (e[i].ndev_ifindex != 0 && if_indextoname(e[i].ndev_ifindex, ifname) == NULL)
            snprintf(ifname, sizeof(ifname), "#%u", e[i].ndev_ifindex);
        cJSON *g = cJSON_CreateObject();
        cJSON_AddNumberToObject(g, "index", e[i].gid_index);
        cJSON_AddStringToObject(g, "gid", text);
        cJSON_AddStringToObject(g, "type", gid_type_str(e[i].gid_type));
        if (ifname[0] != '\0')
            cJSON_AddStringToObject(g, "netdev", ifname);
        cJSON_AddItemToArray(gids, g);
    }
    free(e);
}

static cJSON *device_info(struct ibv_device *dev)
{
    cJSON *d = cJSON_CreateObject();
    char guid[20];
    uint64_t g = be64toh(ibv_get_device_guid(dev));
    snprintf(guid, sizeof(guid), "%04x:%04x:%04x:%04x", (unsigned)(g >> 48) & 0xffff,
             (unsigned)(g >> 32) & 0xffff, (unsigned)(g >> 16) & 0xffff, (unsigned)g & 0xffff);
    cJSON_AddStringToObject(d, "name", ibv_get_device_name(dev));
    cJSON_AddStringToObject(d, "node_guid", guid);
    cJSON_AddStringToObject(d, "node_type", ibv_node_type_str(dev->node_type));
    cJSON_AddStringToObject(d, "transport", transport_str(dev->transport_type));

    struct ibv_context *ctx = ibv_open_device(dev);
    if (ctx == NULL) {
        cJSON_AddStringToObject(d, "error", strerror(errno));
        return d;
    }
    struct ibv_device_attr attr;
    if (ibv_query_device(ctx, &attr) != 0) {
        cJSON_AddStringToObject(d, "error", strerror(errno));
        ibv_close_device(ctx);
        return d;
    }
    cJSON_AddStringToObject(d, "fw_ver", attr.fw_ver);
    cJSON *ports = cJSON_AddArrayToObject(d, "ports");
    size_t gid_slots = 0;
    for (unsigned p = 1; p <= attr.phys_port_cnt; p++) {
        cJSON *port = cJSON_CreateObject();
        cJSON_AddItemToArray(ports, port); /* item p-1: add_gids finds ports so */
        cJSON_AddNumberToObject(port, "port", p);
        struct ibv_port_attr pa;
        if (ibv_query_port(ctx, (uint8_t)p, &pa) != 0) {
            cJSON_AddStringToObject(port, "error", strerror(errno));
            continue;
        }
        double lane_gbps;
        const char *speed = speed_str(pa.active_speed, &lane_gbps);
        int lanes = width_lanes(pa.active_width);
        char width[8];
        snprintf(width, sizeof(width), "%dX", lanes);
        cJSON_AddStringToObject(port, "state", ibv_port_state_str(pa.state));
        cJSON_AddStringToObject(port, "phys_state", phys_state_str(pa.phys_state));
        cJSON_AddStringToObject(port, "link_layer", link_layer_str(pa.link_layer));
        cJSON_AddNumberToObject(port, "active_mtu", 128 << pa.active_mtu);
        cJSON_AddStringToObject(port, "speed", speed);
        cJSON_AddStringToObject(port, "width", lanes ? width : "unknown");
        cJSON_AddNumberToObject(port, "rate_gbps", lane_gbps * lanes);
        cJSON_AddNumberToObject(port, "lid", pa.lid);
        cJSON_AddArrayToObject(port, "gids");
        gid_slots += pa.gid_tbl_len > 0 ? (size_t)pa.gid_tbl_len : 0;
    }
    add_gids(ctx, gid_slots, ports);
    ibv_close_device(ctx);
    return d;
}
#endif /* TQ_HAVE_VERBS */

static void info_devices(cJSON *doc)
{
    int sysfs = sysfs_ib_count();
#ifdef TQ_HAVE_VERBS
    cJSON *arr = cJSON_AddArrayToObject(doc, "devices");
    int n = 0;
    errno = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    int err = errno;
    for (int i = 0; list != NULL && i < n; i++)
        cJSON_AddItemToArray(arr, device_info(list[i]));
    if (list != NULL)
        ibv_free_device_list(list);
    if (n > 0)
        return;
    cJSON_AddStringToObject(doc, "note", no_device_note);
    char hint[512] = "";
    if (sysfs < 0)
        snprintf(hint, sizeof(hint), "The kernel has no RDMA subsystem loaded (" SYSFS_IB
                 " does not exist). Soft-RoCE over an Ethernet interface: modprobe rdma_rxe && "
                 "rdma link add rxe0 type rxe netdev IFACE.");
    else if (sysfs > 0)
        snprintf(hint, sizeof(hint), SYSFS_IB " lists %d device%s that libibverbs cannot open%s%s: "
                 "is ib_uverbs loaded, and the device's provider (ibverbs-providers) installed?",
                 sysfs, sysfs == 1 ? "" : "s", list == NULL ? ": " : "",
                 list == NULL ? strerror(err) : "");
    if (hint[0] != '\0')
        cJSON_AddStringToObject(doc, "hint", hint);
#else
    (void)sysfs;
    cJSON_AddArrayToObject(doc, "devices");
    cJSON_AddStringToObject(doc, "note", "Built without rdma-core (TQ_WITH_VERBS=OFF): "
                                         "RDMA devices are not listed.");
#endif
}

/* ---- UCX ---------------------------------------------------------------- */

#ifdef TQ_HAVE_UCX
static const char *uct_type_str(uct_device_type_t t)
{
    switch (t) {
    case UCT_DEVICE_TYPE_NET: return "network";
    case UCT_DEVICE_TYPE_SHM: return "shared memory";
    case UCT_DEVICE_TYPE_ACC: return "accelerator";
    case UCT_DEVICE_TYPE_SELF: return "loopback";
    default: return "unknown";
    }
}

/* The transports of one memory domain. Opening a domain only reads its
 * configuration and devices: no endpoint, nothing on the network. */
static void ucx_md(uct_component_h comp, const char *comp_name, const char *md_name, cJSON *arr)
{
    uct_md_config_t *config;
    uct_md_h md;
    uct_tl_resource_desc_t *res;
    unsigned n;
    if (uct_md_config_read(comp, NULL, NULL, &config) != UCS_OK)
        return;
    ucs_status_t st = uct_md_open(comp, md_name, config, &md);
    uct_config_release(config);
    if (st != UCS_OK)
        return;
    if (uct_md_query_tl_resources(md, &res, &n) == UCS_OK) {
        for (unsigned i = 0; i < n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "transport", res[i].tl_name);
            cJSON_AddStringToObject(o, "device", res[i].dev_name);
            cJSON_AddStringToObject(o, "type", uct_type_str(res[i].dev_type));
            cJSON_AddStringToObject(o, "component", comp_name);
            cJSON_AddStringToObject(o, "md", md_name);
            cJSON_AddItemToArray(arr, o);
        }
        uct_release_tl_resource_list(res);
    }
    uct_md_close(md);
}
#endif

static void info_ucx(cJSON *doc)
{
    cJSON *arr = cJSON_AddArrayToObject(doc, "ucx");
#ifdef TQ_HAVE_UCX
    cJSON_AddStringToObject(doc, "ucx_version", ucp_get_version_string());
    uct_component_h *comps;
    unsigned ncomps;
    ucs_status_t st = uct_query_components(&comps, &ncomps);
    if (st != UCS_OK) {
        cJSON_AddStringToObject(doc, "ucx_note", ucs_status_string(st));
        return;
    }
    for (unsigned c = 0; c < ncomps; c++) {
        uct_component_attr_t ca = {.field_mask = UCT_COMPONENT_ATTR_FIELD_NAME |
                                                 UCT_COMPONENT_ATTR_FIELD_MD_RESOURCE_COUNT};
        if (uct_component_query(comps[c], &ca) != UCS_OK || ca.md_resource_count == 0)
            continue;
        uct_md_resource_desc_t *mds = calloc(ca.md_resource_count, sizeof(*mds));
        if (mds == NULL)
            continue;
        ca.field_mask = UCT_COMPONENT_ATTR_FIELD_MD_RESOURCES;
        ca.md_resources = mds;
        if (uct_component_query(comps[c], &ca) == UCS_OK)
            for (unsigned m = 0; m < ca.md_resource_count; m++)
                ucx_md(comps[c], ca.name, mds[m].md_name, arr);
        free(mds);
    }
    uct_release_component_list(comps);
#else
    (void)arr;
    cJSON_AddStringToObject(doc, "ucx_note", "Built without UCX (TQ_WITH_UCX=OFF).");
#endif
}

/* ---- libfabric ---------------------------------------------------------- */

#ifdef TQ_HAVE_OFI
/* Append s to the string array arr unless it is there already. */
static void add_unique(cJSON *arr, const char *s)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
        if (strcmp(it->valuestring, s) == 0)
            return;
    cJSON_AddItemToArray(arr, cJSON_CreateString(s));
}

static const char *ep_type_str(enum fi_ep_type t)
{
    switch (t) {
    case FI_EP_MSG: return "msg";
    case FI_EP_DGRAM: return "dgram";
    case FI_EP_RDM: return "rdm";
    case FI_EP_SOCK_STREAM: return "sock_stream";
    case FI_EP_SOCK_DGRAM: return "sock_dgram";
    default: return "unspec";
    }
}

/* The provider's entry in arr, made on first sight. */
static cJSON *ofi_provider(cJSON *arr, const struct fi_fabric_attr *fa)
{
    cJSON *p;
    cJSON_ArrayForEach(p, arr)
        if (strcmp(cJSON_GetObjectItemCaseSensitive(p, "provider")->valuestring, fa->prov_name) == 0)
            return p;
    char version[24];
    snprintf(version, sizeof(version), "%u.%u", FI_MAJOR(fa->prov_version),
             FI_MINOR(fa->prov_version));
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "provider", fa->prov_name);
    cJSON_AddStringToObject(p, "version", version);
    cJSON_AddArrayToObject(p, "endpoints");
    cJSON_AddArrayToObject(p, "fabrics");
    cJSON_AddArrayToObject(p, "domains");
    cJSON_AddBoolToObject(p, "rdm_rma", false);
    cJSON_AddItemToArray(arr, p);
    return p;
}
#endif

/* Every provider libfabric offers with no hints (FI_PROVIDER still filters),
 * one entry per provider name; rdm_rma: reliable datagram endpoints with RMA,
 * what tqrdma's ofi transport asks for. */
static void info_libfabric(cJSON *doc)
{
    cJSON *arr = cJSON_AddArrayToObject(doc, "libfabric");
#ifdef TQ_HAVE_OFI
    uint32_t v = fi_version();
    char version[24];
    snprintf(version, sizeof(version), "%u.%u", FI_MAJOR(v), FI_MINOR(v));
    cJSON_AddStringToObject(doc, "libfabric_version", version);
    struct fi_info *list = NULL;
    int ret = fi_getinfo(v, NULL, NULL, 0, NULL, &list);
    if (ret != 0) {
        if (ret != -FI_ENODATA)
            cJSON_AddStringToObject(doc, "libfabric_note", fi_strerror(-ret));
        return;
    }
    for (struct fi_info *i = list; i != NULL; i = i->next) {
        if (i->fabric_attr == NULL || i->fabric_attr->prov_name == NULL)
            continue;
        cJSON *p = ofi_provider(arr, i->fabric_attr);
        if (i->ep_attr != NULL)
            add_unique(cJSON_GetObjectItemCaseSensitive(p, "endpoints"),
                       ep_type_str(i->ep_attr->type));
        if (i->fabric_attr->name != NULL)
            add_unique(cJSON_GetObjectItemCaseSensitive(p, "fabrics"), i->fabric_attr->name);
        if (i->domain_attr != NULL && i->domain_attr->name != NULL)
            add_unique(cJSON_GetObjectItemCaseSensitive(p, "domains"), i->domain_attr->name);
        if (i->ep_attr != NULL && i->ep_attr->type == FI_EP_RDM && (i->caps & FI_RMA))
            cJSON_ReplaceItemInObjectCaseSensitive(p, "rdm_rma", cJSON_CreateTrue());
    }
    fi_freeinfo(list);
#else
    (void)arr;
    cJSON_AddStringToObject(doc, "libfabric_note", "Built without libfabric (TQ_WITH_OFI=OFF).");
#endif
}

/* ---- the plain-text report ---------------------------------------------- */

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* "a, b, c" of a string array. */
static void print_list(const cJSON *arr)
{
    const cJSON *it;
    const char *sep = "";
    cJSON_ArrayForEach(it, arr) {
        printf("%s%s", sep, it->valuestring);
        sep = ", ";
    }
}

static void print_device(const cJSON *d)
{
    printf("  %s: %s, transport %s, node GUID %s", str(d, "name"), str(d, "node_type"),
           str(d, "transport"), str(d, "node_guid"));
    if (str(d, "fw_ver") != NULL)
        printf(", firmware %s", str(d, "fw_ver"));
    printf("\n");
    if (str(d, "error") != NULL)
        printf("    cannot open it: %s\n", str(d, "error"));
    const cJSON *p, *g;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(d, "ports")) {
        if (str(p, "error") != NULL) {
            printf("    port %.0f: %s\n", num(p, "port"), str(p, "error"));
            continue;
        }
        printf("    port %.0f: %s (%s), %s, MTU %.0f, %g Gb/s (%s %s), LID %.0f\n",
               num(p, "port"), str(p, "state"), str(p, "phys_state"), str(p, "link_layer"),
               num(p, "active_mtu"), num(p, "rate_gbps"), str(p, "width"), str(p, "speed"),
               num(p, "lid"));
        if (str(p, "gids_error") != NULL)
            printf("      GIDs: %s\n", str(p, "gids_error"));
        cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(p, "gids"))
            printf("      GID %-3.0f %-40s %-8s %s\n", num(g, "index"), str(g, "gid"),
                   str(g, "type"), str(g, "netdev") ? str(g, "netdev") : "");
    }
}

/* "name (version)" headings: the version when the library told it. */
static void print_heading(const char *what, const char *version, const char *rest)
{
    printf("\n%s%s%s %s:\n", what, version ? " " : "", version ? version : "", rest);
}

static void print_text(const cJSON *doc)
{
    const cJSON *it, *m;
    printf("tq-rdma-info %s\n\nTransports built in:\n", TQ_VERSION_STRING);
    if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "transports")) == 0)
        printf("  none\n");
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "transports")) {
        const char *reason = str(it, "reason");
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "usable")))
            printf("  %-8s usable\n", str(it, "name"));
        else if (strcmp(str(it, "status"), tq_status_string(TQ_ERR_UNSUPPORTED)) == 0)
            printf("  %-8s built in, not usable here%s%s\n", str(it, "name"),
                   reason ? ": " : "", reason ? reason : "");
        else
            printf("  %-8s built in, failed to start: %s%s%s\n", str(it, "name"),
                   str(it, "status"), reason ? ": " : "", reason ? reason : "");
        /* what the library said besides our reason: often the real cause */
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(it, "messages"))
            if (reason == NULL || strcmp(m->valuestring, reason) != 0)
                printf("           %s\n", m->valuestring);
    }

    printf("\nRDMA devices (libibverbs):\n");
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "devices"))
        print_device(it);
    if (str(doc, "note") != NULL)
        printf("  %s\n", str(doc, "note"));
    /* one sentence of the hint a line */
    for (const char *h = str(doc, "hint"), *dot; h != NULL && *h != '\0'; h = dot + 2) {
        if ((dot = strstr(h, ". ")) == NULL) {
            printf("  %s\n", h);
            break;
        }
        printf("  %.*s\n", (int)(dot + 1 - h), h);
    }

    print_heading("UCX", str(doc, "ucx_version"), "transports");
    if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "ucx")) > 0)
        printf("  %-12s %-16s %-14s %s\n", "transport", "device", "type", "memory domain");
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "ucx"))
        printf("  %-12s %-16s %-14s %s\n", str(it, "transport"), str(it, "device"),
               str(it, "type"), str(it, "md"));
    if (str(doc, "ucx_note") != NULL)
        printf("  %s\n", str(doc, "ucx_note"));

    print_heading("libfabric", str(doc, "libfabric_version"), "providers");
    if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "libfabric")) > 0)
        printf("  %-14s %-18s %-8s %s\n", "provider", "endpoints", "RDM+RMA", "domains");
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "libfabric")) {
        int n = printf("  %-14s ", str(it, "provider"));
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(it, "endpoints"))
            n += printf("%s%s", e == cJSON_GetObjectItemCaseSensitive(it, "endpoints")->child
                                    ? "" : ",", e->valuestring);
        printf("%*s %-8s ", n < 35 ? 35 - n : 0, "",
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "rdm_rma")) ? "yes" : "no");
        print_list(cJSON_GetObjectItemCaseSensitive(it, "domains"));
        printf("\n");
    }
    if (str(doc, "libfabric_note") != NULL)
        printf("  %s\n", str(doc, "libfabric_note"));
    else if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "libfabric")) == 0)
        printf("  none\n");
}

int main(int argc, char **argv)
{
    bool json = false;
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "jhV", opts, NULL)) != -1) {
        switch (opt) {
        case 'j': json = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("tq-rdma-info %s\n", TQ_VERSION_STRING); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tq-rdma-info: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    /* Transports say at debug level why they cannot start (verbs: no device)
     * and at info level what they picked: catch all of it. */
    char err[128];
    tq__log_set_level("debug", err, sizeof(err));
    /* Libraries print to stdout too (UCX logs there). While they run, stdout
     * is stderr, so the report and its JSON stay clean; line buffered, so
     * their lines and ours keep their order. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    int report = dup(STDOUT_FILENO);
    if (report < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        fprintf(stderr, "tq-rdma-info: dup: %m\n");
        return 1;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "version", TQ_VERSION_STRING);
    cJSON *with = cJSON_AddObjectToObject(doc, "built_with");
    cJSON_AddBoolToObject(with, "verbs", BUILT_VERBS);
    cJSON_AddBoolToObject(with, "ucx", BUILT_UCX);
    cJSON_AddBoolToObject(with, "libfabric", BUILT_OFI);
    info_transports(doc);
    info_devices(doc);
    info_ucx(doc);
    info_libfabric(doc);
    fflush(stdout);
    dup2(report, STDOUT_FILENO);
    close(report);

    char *text = json && doc != NULL ? cJSON_Print(doc) : NULL;
    if (doc == NULL || (json && text == NULL)) {
        cJSON_Delete(doc);
        fprintf(stderr, "tq-rdma-info: out of memory\n");
        return 1;
    }
    if (json)
        printf("%s\n", text);
    else
        print_text(doc);
    free(text);
    cJSON_Delete(doc);
    return 0;
}
