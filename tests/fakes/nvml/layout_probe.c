/* Prints sizeof/offsetof of the layout.h entries as the real nvml.h declares them. */
#include <stddef.h>
#include <stdio.h>

#include <nvml.h>

int main(void) {
#define LAYOUT_SIZE(T) printf("%s %ld\n", #T, (long)sizeof(T));
#define LAYOUT_OFFSET(T, F) printf("%s.%s %ld\n", #T, #F, (long)offsetof(T, F));
#include "layout.h"
    return 0;
}
