/*
 * Entry of the kvmm test guest: a PVH ELF (Xen docs/misc/pvh.pandoc). The VMM
 * enters _start32 in 32-bit protected mode, paging off, with EBX = physical
 * address of struct hvm_start_info. We load our own GDT and identity page
 * tables, switch to long mode (Intel SDM vol. 3, 9.8.5) and call guest_main.
 * The same path, preceded by a real-mode trampoline, starts the APs.
 */
#define TRAMPOLINE_ADDRESS 0x70000

    .section .note.pvh, "a", @note
    .balign 4
    .long 4, 4, 18          /* name size, descriptor size, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start32

    .section .data
    .balign 4096
pml4:
    .quad pdpt + 0x3
    .fill 511, 8, 0
pdpt:
    .quad page_directories + 0x0003
    .quad page_directories + 0x1003
    .quad page_directories + 0x2003
    .quad page_directories + 0x3003
    .fill 508, 8, 0
page_directories:
    /* 2 MiB pages identity-mapping 4 GiB; the device gap from 3 GiB uncached (PCD|PWT). */
    .set address, 0
    .rept 2048
    .if address >= 0xc0000000
    .quad address + 0x9b
    .else
    .quad address + 0x83
    .endif
    .set address, address + 0x200000
    .endr

    .balign 16
gdt:
    .quad 0                     /* null */
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
    .quad 0x00cf9a000000ffff    /* 0x18: 32-bit code */
gdt_end:
gdt_pointer:
    .word gdt_end - gdt - 1
    .long gdt

    .globl ap_counter
ap_counter:
    .long 0

    .section .bss
    .balign 4096
    .globl ap_stacks
ap_stacks:
    .skip 4096 * 64
bsp_stack:
    .skip 8192
bsp_stack_top:

/* Loads CR3, sets PAE, EFER.LME, then CR0.PG: long mode (compatibility sub-mode until the far jump). */
.macro ENABLE_LONG_MODE
    mov $pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
.endm

    .text
    .code32
    .globl _start32
_start32:
    cli
    mov $bsp_stack_top, %esp    /* the PVH ABI leaves ESP undefined */
    mov %ebx, %edi              /* hvm_start_info, first argument of guest_main */
    lgdt gdt_pointer
    ENABLE_LONG_MODE
    ljmp $0x08, $bsp_long_mode


    .code64
bsp_long_mode:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov $bsp_stack_top, %rsp
    mov %edi, %edi              /* zero-extend the start_info address */
    call guest_main
1:  cli
    hlt
    jmp 1b

/* Application processors arrive here from the trampoline, in 32-bit protected mode. */
    .code32
ap_protected_mode:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    ENABLE_LONG_MODE            /* a macro, not a call: APs have no stack yet */
    ljmp $0x08, $ap_long_mode

    .code64
ap_long_mode:
    mov $1, %eax
    lock xadd %eax, ap_counter(%rip)   /* eax = this AP's slot */
    and $63, %eax               /* guest_main refuses more than 64 APs */
    inc %eax
    shl $12, %eax
    lea ap_stacks(%rip), %rsp
    add %rax, %rsp
    call ap_main
2:  cli
    hlt
    jmp 2b

/* Real-mode trampoline, copied to TRAMPOLINE_ADDRESS by the BSP; SIPI vector 0x70. */
    .code16
    .globl ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (trampoline_gdt_pointer - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x18, $ap_protected_mode
    .balign 8
trampoline_gdt_pointer:
    .word gdt_end - gdt - 1
    .long gdt
ap_trampoline_end:

/* Interrupt handlers: count, acknowledge at the LAPIC (EOI), return. */
    .code64
    .globl serial_interrupt, timer_interrupt, virtio_interrupt
virtio_interrupt:
    lock incl virtio_interrupt_count(%rip)
    jmp end_of_interrupt
serial_interrupt:
    lock incl serial_interrupt_count(%rip)
    jmp end_of_interrupt
timer_interrupt:
    lock incl timer_interrupt_count(%rip)
end_of_interrupt:
    push %rax
    mov $0xfee000b0, %eax
    movl $0, (%rax)
    pop %rax
    iretq
