// SPDX-License-Identifier: GPL-2.0
/*
 * Run in a guest under the insncount plugin: executing the marker NOP makes
 * the plugin write out the instruction counts since the previous marker.
 * Anywhere else it is a NOP and the program does nothing.
 */
int main(void)
{
	__asm__ volatile(".byte 0x0f, 0x1f, 0x84, 0x00, 0x46, 0x53, 0x4d, 0x4b");
	return 0;
}
