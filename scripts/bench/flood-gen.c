/*
 * ClientHello flood generator for scripts/bench/flood.ts (compiled there with
 * the system C compiler into a temporary directory; no binary is kept).
 *
 *   flood-gen HELLO_FILE DST_PORT RATE SECONDS PREFIXES
 *
 * Sends the datagram in HELLO_FILE to 127.0.0.1:DST_PORT at RATE datagrams per
 * second (0: as fast as it can) for SECONDS, from source addresses spread over
 * PREFIXES /24 networks inside 127.0.0.0/8 (127.20.0.0 upwards) and random
 * source ports, so that every datagram looks like a new peer. With a raw
 * socket (root or CAP_NET_RAW) the source is written into the IP header, as a
 * spoofing attacker does; otherwise it falls back to ordinary UDP sockets
 * bound to 256 source addresses. Destinations other than 127.0.0.1 are never
 * used. Prints "sent N seconds S mode M" on exit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_PAYLOAD 1400
#define UDP_SOCKETS 256

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_random(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

/* 127.(20 + p / 256).(p % 256).host for prefix p */
static uint32_t source_address(uint32_t prefixes, uint32_t host) {
  uint32_t p = next_random() % prefixes;
  return (127u << 24) | ((20u + p / 256u) << 16) | ((p % 256u) << 8) | host;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s HELLO_FILE DST_PORT RATE SECONDS PREFIXES\n", argv[0]);
    return 2;
  }
  unsigned char payload[MAX_PAYLOAD];
  FILE *f = fopen(argv[1], "rb");
  if (f == NULL) { perror("hello file"); return 2; }
  size_t plen = fread(payload, 1, sizeof payload, f);
  fclose(f);
  int port = atoi(argv[2]);
  double rate = atof(argv[3]);
  double seconds = atof(argv[4]);
  uint32_t prefixes = (uint32_t)atoi(argv[5]);
  if (plen == 0 || port <= 0 || port > 65535 || seconds <= 0 || seconds > 120 || prefixes < 1 || prefixes > 60000) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }

  struct sockaddr_in dst;
  memset(&dst, 0, sizeof dst);
  dst.sin_family = AF_INET;
  dst.sin_port = htons((uint16_t)port);
  dst.sin_addr.s_addr = htonl(0x7f000001u); /* 127.0.0.1 only */

  static unsigned char packets[BATCH][sizeof(struct iphdr) + sizeof(struct udphdr) + MAX_PAYLOAD];
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  int raw = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  int udp[UDP_SOCKETS];
  const char *mode = raw >= 0 ? "raw" : "udp";
  size_t total = sizeof(struct iphdr) + sizeof(struct udphdr) + plen;
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < BATCH; i++) {
    if (raw >= 0) {
      struct iphdr *ip = (struct iphdr *)packets[i];
      struct udphdr *uh = (struct udphdr *)(packets[i] + sizeof *ip);
      memset(ip, 0, sizeof *ip);
      ip->version = 4;
      ip->ihl = 5;
      ip->ttl = 64;
      ip->protocol = IPPROTO_UDP;
      ip->tot_len = htons((uint16_t)total);
      ip->daddr = dst.sin_addr.s_addr;
      uh->dest = dst.sin_port;
      uh->len = htons((uint16_t)(sizeof *uh + plen));
      uh->check = 0; /* no UDP checksum (allowed over IPv4) */
      memcpy(packets[i] + sizeof *ip + sizeof *uh, payload, plen);
      iov[i].iov_base = packets[i];
      iov[i].iov_len = total;
    } else {
      iov[i].iov_base = payload;
      iov[i].iov_len = plen;
    }
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &dst;
    msgs[i].msg_hdr.msg_namelen = sizeof dst;
  }
  if (raw < 0) {
    for (int s = 0; s < UDP_SOCKETS; s++) {
      udp[s] = socket(AF_INET, SOCK_DGRAM, 0);
      struct sockaddr_in src;
      memset(&src, 0, sizeof src);
      src.sin_family = AF_INET;
      src.sin_addr.s_addr = htonl(source_address(prefixes, 1 + (uint32_t)s % 254u));
      if (udp[s] < 0 || bind(udp[s], (struct sockaddr *)&src, sizeof src) != 0) { perror("bind"); return 1; }
    }
  }

  double start = now_s(), end = start + seconds;
  unsigned long long sent = 0;
  unsigned batches = 0;
  for (;;) {
    double t = now_s();
    if (t >= end) break;
    if (rate > 0 && sent >= (t - start) * rate) {
      struct timespec pause = {0, 50000};
      nanosleep(&pause, NULL);
      continue;
    }
    int n = BATCH;
    int fd;
    if (raw >= 0) {
      fd = raw;
      for (int i = 0; i < n; i++) {
        struct iphdr *ip = (struct iphdr *)packets[i];
        struct udphdr *uh = (struct udphdr *)(packets[i] + sizeof *ip);
        ip->saddr = htonl(source_address(prefixes, 1 + next_random() % 254u));
        uh->source = htons((uint16_t)(1024 + next_random() % 64000u));
        /* vary the ClientHello random a little, as separate clients would */
        memcpy(packets[i] + sizeof *ip + sizeof *uh + 27, &rng, sizeof rng);
      }
    } else {
      fd = udp[batches % UDP_SOCKETS];
      n = 4; /* a few per source socket, then the next one */
    }
    batches++;
    int r = sendmmsg(fd, msgs, (unsigned)n, 0);
    if (r > 0) sent += (unsigned long long)r;
    else if (r < 0 && errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED && errno != EINTR) { perror("sendmmsg"); return 1; }
  }
  printf("sent %llu seconds %.3f mode %s\n", sent, now_s() - start, mode);
  return 0;
}
