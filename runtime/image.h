/*
 * image.h — PNG files for the runtime (libpng): sample grids written
 * atomically, and 8-bit grayscale / RGB images read for the PNG-folder data
 * set. Not an image library: no resizing, no colour management, no 16-bit.
 */
#ifndef PXC_IMAGE_H
#define PXC_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Encode one 8-bit image (C = 1 grayscale, 3 RGB) as PNG in memory.
 * *png receives a malloc'd buffer of *len bytes. 0, or -1 with a message. */
int rt_png_encode(const uint8_t *pixels /*[H,W,C]*/, int H, int W, int C, unsigned char **png, size_t *len,
                  char *err, size_t errlen);

/* Write one image atomically (rt_write_atomic). 0, or -1 with a message. */
int rt_png_write(const char *path, const uint8_t *pixels /*[H,W,C]*/, int H, int W, int C, char *err,
                 size_t errlen);

/* Write n images as a grid atomically: `cols` images per row (cols <= 0:
 * ceil(sqrt(n))), ceil(n/cols) rows, `pad` pixels of white (255) between
 * the images and around the border; cells past n are white too. The PNG is
 * (rows*H + (rows+1)*pad) x (cols*W + (cols+1)*pad), C = 1 or 3.
 * 0, or -1 with a message. */
int rt_png_write_grid(const char *path, const uint8_t *pixels /*[n,H,W,C]*/, int n, int H, int W, int C, int cols,
                      int pad, char *err, size_t errlen);

/* An 8-bit image read from a PNG. */
typedef struct RtImage {
    int H, W, C;          /* C = 1 (grayscale) or 3 (RGB) */
    uint8_t *pixels;      /* [H,W,C], malloc'd */
} RtImage;

/* Read an 8-bit PNG as grayscale (C = 1) or RGB (C = 3). Gray below 8 bits
 * is expanded; a palette image is converted to RGB; an alpha channel is
 * dropped only when every pixel is opaque. 16-bit images and translucent
 * pixels are refused with a message naming the file. 0, or -1. */
int rt_png_read(const char *path, RtImage *out, char *err, size_t errlen);
void rt_image_free(RtImage *img);

#endif
