/*
 * A stand-in for illumos libdlpi, for havip's tests on Linux: the dlpi_* functions havip's
 * ctypes binding (havip/backends/dlpi.py) calls, with the signatures, dlpi_info_t layout
 * and return codes of illumos-gate usr/src/lib/libdlpi/common/libdlpi.h, implemented over a
 * Linux AF_PACKET socket. Raw mode only (DLPI_RAW): frames include the Ethernet header.
 *
 * Built by tests/test_dlpi.py with: gcc -shared -fPIC -o libfakedlpi.so fakedlpi.c
 */
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define DLPI_PHYSADDR_MAX 64
#define DLPI_LINKNAME_MAX 32
#define DL_SYSERR 4
enum {
	DLPI_SUCCESS = 10000, DLPI_EINVAL, DLPI_ELINKNAMEINVAL, DLPI_ENOLINK, DLPI_EBADLINK,
	DLPI_EINHANDLE, DLPI_ETIMEDOUT
};

typedef struct {
	unsigned int di_opts, di_max_sdu, di_min_sdu, di_state, di_mactype;
	char di_linkname[DLPI_LINKNAME_MAX];
	unsigned char di_physaddr[DLPI_PHYSADDR_MAX];
	unsigned char di_physaddrlen;
	unsigned char di_bcastaddr[DLPI_PHYSADDR_MAX];
	unsigned char di_bcastaddrlen;
	unsigned int di_sap;
	int di_timeout;
	unsigned int di_qos_sel[5];	/* dl_qos_cl_sel1_t */
	unsigned int di_qos_range[8];	/* dl_qos_cl_range1_t */
} dlpi_info_t;

struct handle {
	int fd;
	int ifindex;
	unsigned int sap;
	char name[DLPI_LINKNAME_MAX];
};

const char *
dlpi_strerror(int err)
{
	switch (err) {
	case DLPI_SUCCESS: return "DLPI operation succeeded";
	case DLPI_EINVAL: return "invalid argument";
	case DLPI_ENOLINK: return "DLPI link does not exist";
	case DLPI_EINHANDLE: return "invalid DLPI handle";
	case DLPI_ETIMEDOUT: return "DLPI operation timed out";
	case DL_SYSERR: return strerror(errno);
	default: return "unknown DLPI error";
	}
}

int
dlpi_open(const char *link, void **dhp, unsigned int flags)
{
	struct handle *h;
	int index = (int)if_nametoindex(link);

	(void) flags;
	if (index == 0)
		return (DLPI_ENOLINK);
	if ((h = calloc(1, sizeof (*h))) == NULL)
		return (DL_SYSERR);
	/* Protocol 0: nothing is received until dlpi_bind names the SAP. */
	if ((h->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0)) < 0) {
		int saved = errno;
		free(h);
		errno = saved;
		return (DL_SYSERR);
	}
	h->ifindex = index;
	strncpy(h->name, link, DLPI_LINKNAME_MAX - 1);
	*dhp = h;
	return (DLPI_SUCCESS);
}

void
dlpi_close(void *dh)
{
	struct handle *h = dh;

	if (h != NULL) {
		close(h->fd);
		free(h);
	}
}

int
dlpi_bind(void *dh, unsigned int sap, unsigned int *boundsap)
{
	struct handle *h = dh;
	struct sockaddr_ll sll;

	memset(&sll, 0, sizeof (sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons((unsigned short)sap);
	sll.sll_ifindex = h->ifindex;
	if (bind(h->fd, (struct sockaddr *)&sll, sizeof (sll)) < 0)
		return (DL_SYSERR);
	h->sap = sap;
	if (boundsap != NULL)
		*boundsap = sap;
	return (DLPI_SUCCESS);
}

int
dlpi_info(void *dh, dlpi_info_t *info, unsigned int opt)
{
	struct handle *h = dh;
	struct ifreq ifr;

	(void) opt;
	memset(info, 0, sizeof (*info));
	memset(&ifr, 0, sizeof (ifr));
	strncpy(ifr.ifr_name, h->name, IFNAMSIZ - 1);
	if (ioctl(h->fd, SIOCGIFHWADDR, &ifr) < 0)
		return (DL_SYSERR);
	memcpy(info->di_physaddr, ifr.ifr_hwaddr.sa_data, 6);
	info->di_physaddrlen = 6;
	memset(info->di_bcastaddr, 0xff, 6);
	info->di_bcastaddrlen = 6;
	info->di_sap = h->sap;
	info->di_max_sdu = 1500;
	strncpy(info->di_linkname, h->name, DLPI_LINKNAME_MAX - 1);
	return (DLPI_SUCCESS);
}

int
dlpi_fd(void *dh)
{
	return (((struct handle *)dh)->fd);
}

int
dlpi_send(void *dh, const void *daddr, size_t daddrlen, const void *msg, size_t len,
    const void *sendp)
{
	struct handle *h = dh;

	(void) daddr; (void) daddrlen; (void) sendp;
	if (send(h->fd, msg, len, 0) != (ssize_t)len)
		return (DL_SYSERR);
	return (DLPI_SUCCESS);
}

int
dlpi_recv(void *dh, void *saddr, size_t *saddrlen, void *msg, size_t *msglen, int msec,
    void *recvp)
{
	struct handle *h = dh;
	struct pollfd pfd = { h->fd, POLLIN, 0 };
	struct sockaddr_ll from;
	socklen_t fromlen;
	ssize_t got;

	(void) saddr; (void) saddrlen; (void) recvp;
	for (;;) {
		int ready = poll(&pfd, 1, msec);
		if (ready < 0)
			return (DL_SYSERR);
		if (ready == 0)
			return (DLPI_ETIMEDOUT);
		fromlen = sizeof (from);
		got = recvfrom(h->fd, msg, *msglen, 0, (struct sockaddr *)&from, &fromlen);
		if (got < 0)
			return (DL_SYSERR);
		/* A DLPI stream does not see its own transmissions; skip them like it. */
		if (from.sll_pkttype == PACKET_OUTGOING)
			continue;
		*msglen = (size_t)got;
		return (DLPI_SUCCESS);
	}
}
