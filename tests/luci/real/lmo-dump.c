/*
 * Prints LuCI translation catalogues as the JavaScript the LuCI dispatcher serves to the
 * browser: `window.TR={"<8 hex digits of the key hash>":"<translation>",...};`, read with
 * LuCI's own catalogue code (modules/luci-base/src/lib/lmo.c, built together with this file).
 *
 *   lmo-dump LANG DIR      loads every DIR/ *.LANG.lmo (lmo_load_catalog), prints window.TR
 *
 * Exit status 1 when no catalogue of LANG could be loaded.
 */
#include <stdio.h>

#include "lmo.h"

static void put_json_string(const char *s, int len)
{
	putchar('"');
	for (int i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c < 0x20 || c == 0x7f)
			printf("\\u%04x", c);
		else if (c == '<' || c == '>')
			/* keep "</script>" in a translation from ending the script element */
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static int count;

static void entry(uint32_t key, const char *val, int len, void *priv)
{
	(void)priv;
	printf("%s\"%08x\":", count++ ? "," : "", key);
	put_json_string(val, len);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: lmo-dump LANG DIR\n");
		return 2;
	}

	if (lmo_load_catalog(argv[1], argv[2]) != 0) {
		fprintf(stderr, "lmo-dump: no %s catalogue (*.%s.lmo) could be loaded from %s\n",
		        argv[1], argv[1], argv[2]);
		return 1;
	}

	fputs("window.TR={", stdout);
	lmo_iterate(entry, NULL);
	fputs("};\n", stdout);
	fprintf(stderr, "lmo-dump: %d entries\n", count);

	return 0;
}
